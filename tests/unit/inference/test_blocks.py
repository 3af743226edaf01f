"""BlockCache (segpipe/io/blocks.py): windows cut from cached stored chunks equal the array's own reads, and
neighbouring windows share fetches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from segpipe.io.blocks import BlockCache, cached_blocks


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> zarr.Array:
    data = np.arange(3 * 50 * 70, dtype=np.uint16).reshape(3, 50, 70)
    return zarr.create_array(tmp_path_factory.mktemp("blocks") / "a.zarr", data=data, chunks=(3, 16, 16))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 49), st.integers(0, 49), st.integers(0, 69), st.integers(0, 69), st.integers(-3, 2))
def test_any_window_equals_the_arrays_own_read(stored: zarr.Array, y0: int, y1: int, x0: int, x1: int, band: int):
    cache = BlockCache(stored)
    window = (slice(None), slice(min(y0, y1), max(y0, y1) + 1), slice(min(x0, x1), max(x0, x1) + 1))
    np.testing.assert_array_equal(cache[window], stored[window])
    np.testing.assert_array_equal(cache[(band, *window[1:])], stored[(band, *window[1:])])  # an int drops its axis


def test_a_row_of_halo_windows_fetches_each_stored_chunk_once(stored: zarr.Array) -> None:
    """Windows of 16 + 2 x 3 pixels along a row of 16-pixel chunks: each touches 3 x 3 stored chunks, 6 of them
    shared with the window before it."""
    cache = BlockCache(stored)
    for x0 in range(16, 48, 16):
        window = (slice(None), slice(16 - 3, 32 + 3), slice(x0 - 3, x0 + 16 + 3))
        np.testing.assert_array_equal(cache[window], stored[window])
    assert cache.fetched == 3 * 4  # rows 0..2 of chunk columns 0..3; read one by one it would be 2 x 9


def test_the_cache_keeps_as_many_chunks_as_one_window_touches(stored: zarr.Array) -> None:
    cache = BlockCache(stored)
    cache[:, 10:20, 10:20]  # 2 x 2 chunks
    cache[:, 40:45, 60:65]  # 1 chunk, not among them: the least recently used one goes
    assert cache.capacity == 4
    assert len(cache.blocks) == 4
    assert (0, 0, 0) not in cache.blocks
    cache[:, :, :]  # the whole array: 4 x 5 chunks
    assert cache.capacity == 20
    assert len(cache.blocks) == 20


def test_steps_and_unchunked_arrays() -> None:
    plain = np.zeros((4, 4))
    assert cached_blocks(plain) is plain  # nothing to cache: read as it is
    with pytest.raises(ValueError, match="step-1"):
        BlockCache(zarr.zeros((4, 4), chunks=(2, 2)))[::2, :]
    with pytest.raises(IndexError):
        BlockCache(zarr.zeros((4, 4), chunks=(2, 2)))[4, :]


def test_a_path_is_not_an_array(tmp_path: Path) -> None:
    assert cached_blocks(tmp_path) is tmp_path
