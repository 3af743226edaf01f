"""The synthetic nuclei generator: tile independence and determinism (segpipe/synthetic.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from segpipe import synthetic
from segpipe.synthetic import noisy_tile, nuclei_near, render, write_sample

boxes = st.tuples(st.integers(-100, 400), st.integers(1, 90), st.integers(-100, 400), st.integers(1, 90))


@settings(deadline=None, max_examples=30)
@given(boxes, st.integers(0, 40), st.integers(0, 40), st.integers(0, 3))
def test_truth_of_a_region_equals_the_crop_of_a_bigger_render(box, grow_before, grow_after, seed) -> None:
    y0, h, x0, w = box
    _, small = render(y0, y0 + h, x0, x0 + w, seed)
    _, big = render(y0 - grow_before, y0 + h + grow_after, x0 - grow_after, x0 + w + grow_before, seed)
    crop = big[grow_before : grow_before + h, grow_after : grow_after + w]
    np.testing.assert_array_equal(small, crop)


@pytest.mark.parametrize(
    ("small", "big"), [((0, 64, 0, 64), (0, 128, 0, 128)), ((100, 164, 100, 164), (90, 200, 80, 220))]
)
def test_image_of_a_region_equals_the_crop_of_a_bigger_render(small, big) -> None:
    image, _ = render(*small, seed=0)
    whole, _ = render(*big, seed=0)
    dy, dx = small[0] - big[0], small[2] - big[2]
    np.testing.assert_array_equal(image, whole[dy : dy + image.shape[0], dx : dx + image.shape[1]])


def _footprint_hits(box: tuple[int, int, int, int], cy: float, cx: float, semi_major: float) -> bool:
    """Whether render() draws this nucleus into ``box`` (it draws int(c) +- ceil(semi_major) + 3)."""
    r = int(math.ceil(semi_major)) + 3
    y0, y1, x0, x1 = box
    return int(cy) - r < y1 and int(cy) + r + 1 > y0 and int(cx) - r < x1 and int(cx) + r + 1 > x0


def test_nuclei_near_returns_every_nucleus_render_draws_into_the_box() -> None:
    box = (108, 128, 0, 480)  # seed 0: a nucleus at y ~ 145.6 (semi-major ~14.1) reaches row 127
    near = nuclei_near(*box, seed=0)
    found = set(zip(near.cy.tolist(), near.cx.tolist(), strict=True))
    wide = nuclei_near(box[0] - 100, box[1] + 100, box[2] - 100, box[3] + 100, seed=0)
    missed = [
        (cy, cx)
        for cy, cx, major in zip(wide.cy.tolist(), wide.cx.tolist(), wide.semi_major.tolist(), strict=True)
        if _footprint_hits(box, cy, cx, major) and (cy, cx) not in found
    ]
    assert missed == []


def test_nuclei_are_deterministic_per_seed() -> None:
    a, b, c = nuclei_near(0, 100, 0, 100, 1), nuclei_near(0, 100, 0, 100, 1), nuclei_near(0, 100, 0, 100, 2)
    np.testing.assert_array_equal(a.cy, b.cy)
    assert not (len(a.cy) == len(c.cy) and np.array_equal(a.cy, c.cy))
    assert (a.semi_major <= synthetic.MAX_SEMI_AXIS).all()
    assert (a.semi_minor <= a.semi_major).all()


def test_write_sample_is_deterministic(tmp_path: Path) -> None:
    first = write_sample(tmp_path / "a", 300, seed=5)
    second = write_sample(tmp_path / "b", 300, seed=5)
    other = write_sample(tmp_path / "c", 300, seed=6)
    for one, two, three in zip(first, second, other, strict=True):
        pixels = tifffile.imread(one)
        assert pixels.tobytes() == tifffile.imread(two).tobytes()
        assert pixels.shape == (300, 300)
        assert pixels.tobytes() != tifffile.imread(three).tobytes()
    image, truth = (tifffile.imread(p) for p in first)
    assert image.dtype == np.uint16
    assert truth.dtype == np.uint8
    assert set(np.unique(truth).tolist()) == {0, 1}
    assert 0.05 < truth.mean() < 0.5
    assert image[truth == 1].mean() > image[truth == 0].mean()  # nuclei are brighter than background
    with tifffile.TiffFile(first[0]) as tif:
        page = tif.pages[0]
        assert page.is_tiled
        assert page.tilelength == synthetic.NOISE_TILE
        assert page.compression == 8  # zlib


def test_noisy_tile_matches_write_sample(tmp_path: Path) -> None:
    image_path, truth_path = write_sample(tmp_path, 300, seed=2)
    image, truth = tifffile.imread(image_path), tifffile.imread(truth_path)
    tile_image, tile_truth = noisy_tile(1, 0, seed=2)
    np.testing.assert_array_equal(image[256:300, 0:256], tile_image[:44])
    np.testing.assert_array_equal(truth[256:300, 0:256], tile_truth[:44])


@settings(deadline=None, max_examples=15)
@given(boxes, st.integers(0, 5))
def test_truth_classes_are_zero_or_one(box, seed) -> None:
    y0, h, x0, w = box
    image, truth = render(y0, y0 + h, x0, x0 + w, seed)
    assert truth.dtype == np.uint8
    assert set(np.unique(truth).tolist()) <= {0, 1}
    assert image.dtype == np.float32
    assert image.shape == (h, w)
    assert np.isfinite(image).all()
