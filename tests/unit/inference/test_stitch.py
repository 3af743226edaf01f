"""Gaussian blending: chunked == whole image, any size; seam-free by construction; weights as documented."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from segpipe import normalize
from segpipe.chunk_inference import ChunkJob, ChunkOutputs, Windowing, create_mask, read_window, segment_image
from segpipe.config import InferenceConfig
from segpipe.io.images import ImageSource
from segpipe.models import load_predictor, resolve_model
from segpipe.tiling import Region, gaussian_weight, window_origins

from ..helpers import blend_windows

MODEL = resolve_model("builtin")
PREDICTOR = load_predictor(MODEL, "cpu", 1)
UNIT_RANGE = normalize.BandStats((0.0,), (1.0,))  # the builtin card's percentile scaling, left as the identity


def _source(tmp: Path, height: int, width: int, seed: int = 0) -> ImageSource:
    data = np.random.default_rng(seed).random((1, height, width), dtype=np.float32)
    zarr.create_array(tmp / "in.zarr", data=data, chunks=(1, 32, 32), overwrite=True)
    return ImageSource(str(tmp / "in.zarr"), "zarr", "CYX", (1, height, width), "<f4")


def _segment(source: ImageSource, chunk: int, tile: int, halo: int, batch_size: int, **mode: Any) -> np.ndarray:
    """Run segment_image over every chunk of ``source`` (local scheduler) and return the stitched mask."""
    mask = str(Path(source.path).parent / "mask.zarr")
    create_mask(mask, source.height, source.width, chunk, 2)
    inference = InferenceConfig(batch_size=batch_size, device="cpu")
    windowing = Windowing(chunk, tile, halo, **mode)
    segment_image(ChunkJob(source, MODEL, windowing, inference, ChunkOutputs(mask), UNIT_RANGE))
    return np.asarray(zarr.open_array(mask, mode="r")[:])


def _whole_image_logits(source: ImageSource, patch: int, stride: int) -> np.ndarray:
    region = Region(0, source.height, 0, source.width)
    return blend_windows(PREDICTOR, read_window(source, region, patch), region, patch, stride, 4)


@settings(max_examples=12, deadline=None)
@given(
    st.integers(1, 90),
    st.integers(1, 90),
    st.sampled_from([16, 24, 40]),
    st.sampled_from([(16, 8), (32, 16)]),
)
def test_chunked_gaussian_equals_whole_image(
    tmp_path_factory: pytest.TempPathFactory,
    height: int,
    width: int,
    chunk: int,
    patch_stride: tuple[int, int],
) -> None:
    patch, stride = patch_stride
    source = _source(tmp_path_factory.mktemp("g"), height, width)
    result = _segment(source, chunk, patch, 0, batch_size=3, stitch="gaussian", stride=stride)
    expected = _whole_image_logits(source, patch, stride).argmax(axis=0)
    assert np.array_equal(result, expected)


def test_window_grid_is_shared_by_neighbouring_chunks() -> None:
    left = set(window_origins(Region(0, 64, 0, 64), 32, 16))
    right = set(window_origins(Region(0, 64, 64, 128), 32, 16))
    straddling = {o for o in left if o[1] + 32 > 64}
    assert straddling, "no window straddles the chunk border"
    assert straddling <= right  # windows across the border are the same windows on both sides
    whole = set(window_origins(Region(0, 64, 0, 128), 32, 16))
    assert whole == left | right


def test_every_pixel_is_covered() -> None:
    region = Region(5, 77, 3, 50)
    cover = np.zeros((region.height, region.width), int)
    for y, x in window_origins(region, 24, 8):
        ys = slice(max(y, region.y0) - region.y0, min(y + 24, region.y1) - region.y0)
        xs = slice(max(x, region.x0) - region.x0, min(x + 24, region.x1) - region.x0)
        cover[ys, xs] += 1
    # (patch / stride) ** 2 windows over each pixel
    assert cover.min() == 9
    assert cover.max() == 9


def test_gaussian_weight() -> None:
    w = gaussian_weight(64)
    assert w.shape == (64, 64)
    assert w.max() == pytest.approx(1.0)
    assert w.min() > 0
    assert np.allclose(w, w.T)
    assert np.allclose(w, w[::-1, ::-1])
    centre, sigma = 31.5, 8.0
    assert w[0, 31] == pytest.approx(
        np.exp(-0.5 * ((0 - centre) / sigma) ** 2 - 0.5 * ((31 - centre) / sigma) ** 2)
        / np.exp(-0.5 * (0.5 / sigma) ** 2 * 2),
        rel=1e-5,
    )


def test_blended_logits_are_normalised_mean() -> None:
    """With a constant predictor, the blend returns that constant (weights are normalised)."""

    class Constant:
        card = MODEL.card

        def launch(self, batch: np.ndarray) -> object:
            logits = np.tile(np.array([1.0, 3.0], np.float32)[None, :, None, None], (len(batch), 1, *batch.shape[2:]))
            return lambda: logits

    region = Region(0, 20, 0, 30)
    window = np.zeros((1, 20 + 32, 30 + 32), np.float32)
    out = blend_windows(Constant(), window, region, 16, 8, 5)  # type: ignore[arg-type]
    assert np.allclose(out[0], 1.0)
    assert np.allclose(out[1], 3.0)


def test_normalize_is_applied_the_same_in_both_modes(tmp_path: Path) -> None:
    source = _source(tmp_path, 40, 40)
    stats = normalize.BandStats((0.2,), (0.8,))
    window = read_window(source, Region(0, 40, 0, 40), 8)
    assert np.allclose(normalize.apply(window, stats), (window - 0.2) / 0.6)


@settings(max_examples=15, deadline=None)
@given(
    st.integers(1, 80),
    st.integers(1, 80),
    st.sampled_from([4, 12, 32, 36]),
    st.sampled_from([4, 8, 16]),
    st.sampled_from([28, 32, 40]),
    st.sampled_from(["symmetric", "reflect", "edge"]),
)
def test_trim_output_has_the_input_size_and_equals_whole_image(
    tmp_path_factory: pytest.TempPathFactory, height: int, width: int, chunk: int, tile: int, halo: int, pad: str
) -> None:
    """Any size from 1 x 1, any chunk, tile and halo >= the receptive field, any border padding: the stitched
    mask has the input's exact shape and equals one pass over the whole (padded) image."""
    source = _source(tmp_path_factory.mktemp("t"), height, width)
    result = _segment(source, chunk, min(tile, chunk), halo, batch_size=2, pad_mode=pad)
    assert result.shape == (height, width)
    whole = read_window(source, Region(0, height, 0, width), halo, pad)
    padded = np.pad(whole, ((0, 0), (0, -whole.shape[1] % 4), (0, -whole.shape[2] % 4)), mode="symmetric")
    expected = PREDICTOR(padded[None])[0, :, halo : halo + height, halo : halo + width].argmax(axis=0)
    np.testing.assert_array_equal(result, expected)
