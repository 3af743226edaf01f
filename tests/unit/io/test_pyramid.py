"""Pyramid levels (segpipe/io/omezarr.py build_pyramid): chunks over nothing stored are not computed, and the
levels' bytes are those of a pyramid built chunk by chunk over everything; integer means are exact."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

from segpipe.executor import local_executor
from segpipe.io import omezarr
from segpipe.io.omezarr import build_pyramid, mean_2x2
from segpipe.storage import create_array, stored_chunks

CHUNK = 64
EDGE = 8 * CHUNK  # 8 x 8 chunks at level 0, three levels of 64-pixel chunks after it


def _reference_mean(block: np.ndarray) -> np.ndarray:
    """np.rint of the float64 mean of each edge-padded 2 x 2 block (what mean_2x2 computed before integer sums)."""
    h, w = block.shape[-2:]
    padded = np.pad(block.astype(np.float64), [(0, 0)] * (block.ndim - 2) + [(0, h % 2), (0, w % 2)], "edge")
    means = padded.reshape(*padded.shape[:-2], -1, 2, padded.shape[-1] // 2, 2).mean(axis=(-3, -1))
    return np.rint(means).astype(block.dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32])
@pytest.mark.parametrize("shape", [(1, 300, 301), (3, 7, 9), (1, 1), (2, 256, 2)])
def test_integer_means_equal_the_rounded_float_mean(dtype: type, shape: tuple[int, ...]) -> None:
    """Over the whole range of the type, including halves (rounded to even) and negative sums."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    block = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
    np.testing.assert_array_equal(mean_2x2(block), _reference_mean(block))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32])
def test_integer_means_round_small_halves_to_even(dtype: type) -> None:
    """Sums of -3..3 over every 2 x 2 block: quarters, halves and three quarters of both signs."""
    low = -3 if np.iinfo(dtype).min < 0 else 0
    block = np.random.default_rng(4).integers(low, 4, (1, 64, 66)).astype(dtype)
    np.testing.assert_array_equal(mean_2x2(block), _reference_mean(block))


def _sparse_level0(path: Path, dtype: Any, lead: tuple[int, ...]) -> tuple[str, np.ndarray]:
    """A level 0 of random values in a few chunks only (the rest never written: the fill value, 0)."""
    url = str(path / "0")
    array = create_array(
        url, shape=(*lead, EDGE, EDGE), chunks=(*lead, CHUNK, CHUNK), dtype=dtype, fill_value=0, overwrite=True
    )
    values = np.zeros((*lead, EDGE, EDGE), dtype)
    rng = np.random.default_rng(5)
    for y, x in ((0, 0), (1, 2), (5, 5), (7, 3)):  # chunk indices: a corner, the middle, the last row
        block = rng.integers(1, 250, (*lead, CHUNK, CHUNK)).astype(dtype)
        values[..., y * CHUNK : (y + 1) * CHUNK, x * CHUNK : (x + 1) * CHUNK] = block
        array[..., y * CHUNK : (y + 1) * CHUNK, x * CHUNK : (x + 1) * CHUNK] = block
    return url, values


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _built(tmp_path: Path, name: str, labels: bool, listing: bool, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / name
    dtype, lead = (np.uint8, ()) if labels else (np.uint16, (3,))
    _sparse_level0(root, dtype, lead)
    with monkeypatch.context() as patch:
        if not listing:  # every chunk computed, as before chunks over nothing stored were left out
            patch.setattr(omezarr, "stored_chunks", lambda array: None)
        build_pyramid(str(root), 4, CHUNK, labels)
    return root


@pytest.mark.parametrize("labels", [True, False], ids=["labels", "image"])
def test_levels_are_byte_identical_to_computing_every_chunk(
    tmp_path: Path, labels: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    skipping = _built(tmp_path, "skipping", labels, True, monkeypatch)
    everything = _built(tmp_path, "everything", labels, False, monkeypatch)
    assert _files(skipping) == _files(everything)


@pytest.mark.parametrize("labels", [True, False], ids=["labels", "image"])
def test_levels_read_back_as_the_reduction_of_level_0(tmp_path: Path, labels: bool) -> None:
    dtype, lead = (np.uint8, ()) if labels else (np.uint16, (3,))
    url, values = _sparse_level0(tmp_path, dtype, lead)
    build_pyramid(str(tmp_path), 3, CHUNK, labels)
    expected = values[..., ::4, ::4] if labels else mean_2x2(mean_2x2(values))
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "2"), mode="r")[:], expected)


def test_only_chunks_over_stored_chunks_are_computed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Level 1 (4 x 4 chunks) computes the 4 over the stored level-0 chunks; nothing is stored elsewhere."""
    _sparse_level0(tmp_path, np.uint8, ())
    computed: list[Any] = []
    real = omezarr._downsample_chunks

    def recording(src: str, dst: str, regions: Sequence[Any], labels: bool) -> None:
        if dst.endswith("/1"):
            computed.extend((r.y0 // CHUNK, r.x0 // CHUNK) for r in regions)
        real(src, dst, regions, labels)

    monkeypatch.setattr(omezarr, "_downsample_chunks", recording)
    build_pyramid(str(tmp_path), 2, CHUNK, True)
    assert sorted(computed) == [(0, 0), (0, 1), (2, 2), (3, 1)]


def test_stored_chunks_lists_written_chunks_and_not_fill_valued_ones(tmp_path: Path) -> None:
    array = create_array(str(tmp_path / "a"), shape=(3, 256, 256), chunks=(3, 64, 64), dtype=np.uint8, fill_value=0)
    array[:, 64:128, 0:64] = 7
    array[:, 128:192, 128:192] = 0  # equal to the fill value: zarr stores nothing
    assert stored_chunks(array) == {(0, 1, 0)}


def test_stored_chunks_of_a_sharded_array_are_unknown(tmp_path: Path) -> None:
    """Its keys name shards, not chunks: None, so that every chunk is computed."""
    array = create_array(str(tmp_path / "s"), shape=(256, 256), chunks=(64, 64), shards=(128, 128), dtype=np.uint8)
    array[:64, :64] = 1
    assert stored_chunks(array) is None


def test_a_source_whose_fill_value_differs_is_computed_everywhere(tmp_path: Path) -> None:
    """Its unstored chunks read as 9, which level 1 (fill 0) must store."""
    create_array(str(tmp_path / "0"), shape=(256, 256), chunks=(64, 64), dtype=np.uint8, fill_value=9)
    build_pyramid(str(tmp_path), 2, 64, True)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "1"), mode="r")[:], np.full((128, 128), 9))


def test_a_level_of_one_chunk_is_computed_without_the_executor(tmp_path: Path) -> None:
    """Levels 1 and 2 (4 and 3 chunks to compute) go to the executor; level 3, one chunk, is computed here."""
    url, values = _sparse_level0(tmp_path, np.uint8, ())
    calls: list[int] = []

    def counting(tasks: Sequence[Any], label: str = "") -> list[Any]:
        calls.append(len(tasks))
        return local_executor(tasks, label)

    build_pyramid(str(tmp_path), 4, CHUNK, True, counting)
    assert len(calls) == 2
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "3"), mode="r")[:], values[::8, ::8])
