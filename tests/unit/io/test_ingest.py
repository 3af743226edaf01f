"""Ingest of an image into a chunked Zarr array and its band statistics (segpipe/io/copy.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from segpipe import normalize
from segpipe.io.copy import ingest, measure
from segpipe.io.images import open_image
from segpipe.io.ledger import ChunkLedger
from segpipe.normalize import BandStats
from segpipe.tiling import chunk_grid

RNG = np.random.default_rng(7)


@pytest.fixture
def three_band_tiff(tmp_path: Path):
    data = RNG.gamma(2.0, 300.0, (45, 61, 3)).astype(np.uint16)  # interleaved RGB-like, stored YXS
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, data, photometric="rgb", tile=(16, 16), compression="zlib")
    return open_image(path), np.moveaxis(data, -1, 0)


@pytest.mark.parametrize("chunk", [7, 16, 32, 1000])
def test_ingest_copies_pixels_onto_the_requested_chunk_grid(tmp_path: Path, three_band_tiff, chunk: int) -> None:
    source, expected = three_band_tiff
    dest = str(tmp_path / "input.zarr")
    stats = ingest(source, dest, chunk)
    array = zarr.open_array(dest, mode="r")
    assert array.shape == expected.shape
    assert array.chunks == (3, min(chunk, 45), min(chunk, 61))
    assert array.dtype == expected.dtype
    np.testing.assert_array_equal(array[:], expected)
    assert stats == measure(source, chunk)
    assert stats == measure(open_image(dest), chunk)  # the copy measures like the original
    assert stats == BandStats.from_samples(expected.reshape(3, -1))  # small image: every pixel is sampled


@pytest.mark.parametrize("max_samples", [100, 400, 2000])
def test_band_stats_do_not_depend_on_the_chunking(tmp_path: Path, three_band_tiff, monkeypatch, max_samples) -> None:
    """With a stride > 1, samples are aligned on image coordinates, so every chunking gives the same stats."""
    monkeypatch.setattr(normalize, "MAX_SAMPLES", max_samples)
    source, expected = three_band_tiff
    stride = normalize.sample_stride(source.height, source.width)
    assert stride > 1
    reference = BandStats.from_samples(expected[:, ::stride, ::stride])
    for chunk in (5, 13, 16, 64):
        assert ingest(source, str(tmp_path / f"c{chunk}.zarr"), chunk) == reference
        assert measure(source, chunk) == reference


def test_band_stats_of_a_large_image_use_a_strided_sample(tmp_path: Path) -> None:
    """An image above MAX_SAMPLES pixels is sampled with stride 2; chunkings of 100 and 256 agree."""
    data = RNG.integers(0, 4096, (1030, 1030)).astype(np.uint16)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, data, tile=(256, 256))
    source = open_image(path)
    assert normalize.sample_stride(source.height, source.width) == 2
    reference = BandStats.from_samples(data[np.newaxis, ::2, ::2])
    assert measure(source, 100) == reference
    assert ingest(source, str(tmp_path / "in.zarr"), 256) == reference


def test_ingest_overwrites_and_records_the_source(tmp_path: Path, three_band_tiff) -> None:
    source, expected = three_band_tiff
    dest = str(tmp_path / "input.zarr")
    zarr.create_array(dest, shape=(1, 2, 2), dtype="uint8")  # something stale there already
    ingest(source, dest, 20)
    array = zarr.open_array(dest, mode="r")
    np.testing.assert_array_equal(array[:], expected)
    assert array.attrs["segpipe"]["source"] == source.path
    assert array.metadata.dimension_names == ("c", "y", "x")


def test_band_stats_map_percentiles_to_zero_and_one() -> None:
    samples = np.arange(1001, dtype=np.float64).reshape(1, -1)
    stats = BandStats.from_samples(samples)
    assert stats.low == (10.0,)
    assert stats.high == pytest.approx((998.0,))
    scaled = normalize.apply(np.array([[[10.0, 998.0]]]), stats)
    np.testing.assert_allclose(scaled, [[[0.0, 1.0]]], atol=1e-6)
    assert normalize.apply(np.array([[[3]]], np.uint16), None).dtype == np.float32


def test_ingest_with_a_ledger_resumes_without_copying_done_chunks(tmp_path: Path, three_band_tiff) -> None:
    source, expected = three_band_tiff
    dest = str(tmp_path / "input.zarr")
    ledger = ChunkLedger(str(tmp_path), "ingest", "key")
    first = ingest(source, dest, 16, ledger=ledger)
    assert ledger.done_count() == len(chunk_grid(45, 61, 16))
    # Damage one copied chunk behind the ledger's back: a resumed ingest must not copy it again ...
    zarr.open_array(dest, mode="r+")[:, :16, :16] = 0
    zarr.open_array(dest, mode="r+")[:, :16, 16:32] = 0  # ... while a chunk whose marker is gone is copied again.
    ledger.root.child("0_16").remove()
    second = ingest(source, dest, 16, ledger=ledger)
    copy = zarr.open_array(dest, mode="r")[:]
    assert (copy[:, :16, :16] == 0).all()
    np.testing.assert_array_equal(copy[:, :16, 16:32], expected[:, :16, 16:32])
    np.testing.assert_array_equal(copy[:, 16:], expected[:, 16:])
    assert first == BandStats.from_samples(expected.reshape(3, -1))
    patched = expected.copy()
    patched[:, :16, :16] = 0
    assert second == BandStats.from_samples(patched.reshape(3, -1))  # samples of done chunks read back from dest
