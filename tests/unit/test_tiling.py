"""Chunk grid, tiles, mirror padding and strided sampling (segpipe/tiling.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from segpipe.tiling import Region, chunk_grid, clip, pad_to_region, round_up, strided_sample, tiles_in

PROPERTY = settings(deadline=None, max_examples=60)


def _coverage(regions: list[Region], height: int, width: int) -> np.ndarray:
    counts = np.zeros((height, width), np.int64)
    for r in regions:
        assert 0 <= r.y0 < r.y1 <= height, r
        assert 0 <= r.x0 < r.x1 <= width, r
        counts[r.y0 : r.y1, r.x0 : r.x1] += 1
    return counts


@PROPERTY
@given(st.integers(1, 300), st.integers(1, 300), st.integers(1, 128))
def test_chunk_grid_covers_every_pixel_exactly_once(height: int, width: int, chunk: int) -> None:
    regions = chunk_grid(height, width, chunk)
    assert (_coverage(regions, height, width) == 1).all()
    assert all(r.height <= chunk and r.width <= chunk for r in regions)
    assert len(regions) == -(-height // chunk) * -(-width // chunk)
    # Row-major, and every chunk but the edge ones is full size (so chunks sit on the Zarr chunk grid).
    assert regions == sorted(regions)
    assert all(r.y0 % chunk == 0 and r.x0 % chunk == 0 for r in regions)


@PROPERTY
@given(st.integers(0, 50), st.integers(1, 90), st.integers(0, 50), st.integers(1, 90), st.integers(1, 40))
def test_tiles_in_cover_the_region_exactly_once(y0: int, h: int, x0: int, w: int, tile: int) -> None:
    region = Region(y0, y0 + h, x0, x0 + w)
    tiles = list(tiles_in(region, tile))
    counts = _coverage(tiles, y0 + h, x0 + w)
    assert (counts[y0:, x0:] == 1).all()
    assert counts[:y0].sum() == 0
    assert counts[:, :x0].sum() == 0
    assert all(t.y0 == y0 + (t.y0 - y0) // tile * tile for t in tiles)  # tiles start at the region's corner


def test_region_helpers() -> None:
    r = Region(2, 5, 10, 17)
    assert (r.height, r.width) == (3, 7)
    assert r.grow(2) == Region(0, 7, 8, 19)
    assert r.shift(-2, 3) == Region(0, 3, 13, 20)
    assert clip(Region(-3, 9, -1, 4), 6, 3) == Region(0, 6, 0, 3)
    assert [round_up(v, 4) for v in (0, 1, 4, 5, 8)] == [0, 4, 4, 8, 8]


@PROPERTY
@given(
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(1, 17),
    st.integers(0, 45),
    st.data(),
)
def test_pad_to_region_is_the_whole_image_mirror_extension(
    height: int, width: int, chunk: int, halo: int, data: st.DataObject
) -> None:
    """The window around any chunk equals the same box cut from the whole image mirror-padded by ``halo``."""
    image = np.arange(2 * height * width, dtype=np.float32).reshape(2, height, width)
    region = data.draw(st.sampled_from(chunk_grid(height, width, chunk)))
    want = region.grow(halo)
    have = clip(want, height, width)
    window = pad_to_region(image[:, have.y0 : have.y1, have.x0 : have.x1], have, want)
    padded = np.pad(image, ((0, 0), (halo, halo), (halo, halo)), mode="symmetric")
    expected = padded[:, region.y0 : region.y1 + 2 * halo, region.x0 : region.x1 + 2 * halo]
    np.testing.assert_array_equal(window, expected)


def test_pad_to_region_leaves_interior_windows_untouched() -> None:
    image = np.arange(30 * 40, dtype=np.int32).reshape(1, 30, 40)
    want = Region(5, 25, 6, 34)  # inside the image: no made-up pixels
    crop = image[:, want.y0 : want.y1, want.x0 : want.x1]
    assert pad_to_region(crop, want, want) is crop


def test_pad_to_region_of_a_one_pixel_image() -> None:
    pixel = np.full((3, 1, 1), 7.5, np.float32)
    out = pad_to_region(pixel, Region(0, 1, 0, 1), Region(-20, 21, -3, 4))
    assert out.shape == (3, 41, 7)
    assert (out == 7.5).all()


@PROPERTY
@given(st.integers(1, 120), st.integers(1, 120), st.integers(1, 50), st.integers(1, 9))
def test_strided_sample_is_independent_of_chunking(height: int, width: int, chunk: int, stride: int) -> None:
    """Sample of the whole image == union of the samples of its chunks, as sets of image coordinates."""
    codes = np.arange(height * width, dtype=np.int64).reshape(1, height, width)  # pixel (y, x) holds y*W + x
    whole = strided_sample(codes, Region(0, height, 0, width), stride).ravel()
    parts = [
        strided_sample(codes[:, r.y0 : r.y1, r.x0 : r.x1], r, stride).ravel() for r in chunk_grid(height, width, chunk)
    ]
    pieces = np.concatenate(parts)
    assert len(pieces) == len(set(pieces.tolist()))  # no pixel sampled twice
    assert set(pieces.tolist()) == set(whole.tolist())
    ys, xs = np.divmod(whole, width)
    assert (ys % stride == 0).all()
    assert (xs % stride == 0).all()
    assert len(whole) == -(-height // stride) * -(-width // stride)
