"""Outputs at any URL: ingest with its ledger, pyramids, NGFF metadata and the (Geo)TIFF export behave the same
on a local folder, ``memory://`` and S3 (segpipe/io/copy.py, omezarr.py, export.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from segpipe.io.copy import ingest, open_copy
from segpipe.io.export import export_tiff
from segpipe.io.images import open_image
from segpipe.io.ledger import ChunkLedger
from segpipe.io.omezarr import build_pyramid, read_segpipe_attrs, write_metadata
from segpipe.normalize import BandStats
from segpipe.storage import create_array, location, open_array, stored_chunks
from segpipe.tiling import chunk_grid

RNG = np.random.default_rng(5)
GEO_TAGS = [[33550, 12, 3, [30.0, 30.0, 0.0]], [33922, 12, 6, [0.0, 0.0, 0.0, 399960.0, 5000040.0, 0.0]]]


def test_ingest_into_a_store_resumes_from_its_ledger(store_url: str, tmp_path: Path) -> None:
    data = RNG.integers(0, 4000, (45, 61, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "rgb.tif", data, photometric="rgb", tile=(16, 16))
    expected = np.moveaxis(data, -1, 0)
    source = open_image(tmp_path / "rgb.tif")
    store = location(store_url).child("scene.ome.zarr")
    dest = store.child("0")
    ledger = ChunkLedger(store, "ingest", "key")
    first = ingest(source, dest.url, 16, ledger=ledger)
    np.testing.assert_array_equal(open_array(dest)[:], expected)
    assert ledger.done_count() == len(chunk_grid(45, 61, 16))
    assert store.child(".segpipe").listdir() == ["ingest-key"]
    open_array(dest, mode="r+")[:, :16, :16] = 0  # behind the ledger's back: not copied again ...
    open_array(dest, mode="r+")[:, 16:32, :16] = 0
    ledger.root.child("16_0").remove()  # ... unless its marker is gone
    second = ingest(source, dest, 16, ledger=ledger)
    copy = open_array(dest)[:]
    assert (copy[:, :16, :16] == 0).all()
    np.testing.assert_array_equal(copy[:, 16:], expected[:, 16:])
    assert first == BandStats.from_samples(expected.reshape(3, -1))
    assert second != first
    assert open_copy(source, dest).path == dest.url


def test_stored_chunks_and_a_sparse_pyramid_on_any_store(store_url: str) -> None:
    """One written chunk of four: listed, and level 1 holds its reduction and nothing else."""
    store = location(store_url).child("sparse.ome.zarr")
    level0 = create_array(store.child("labels", "mask", "0"), shape=(32, 32), chunks=(16, 16), dtype=np.uint8)
    level0[16:32, 0:16] = 3
    assert stored_chunks(level0) == {(1, 0)}
    build_pyramid(store.child("labels", "mask").url, 2, 8, labels=True)
    level1 = open_array(store.child("labels", "mask", "1"))
    assert stored_chunks(level1) == {(1, 0)}
    expected = np.zeros((16, 16), np.uint8)
    expected[8:, :8] = 3
    np.testing.assert_array_equal(level1[:], expected)


def test_pyramid_and_metadata_on_any_store(store_url: str) -> None:
    store = location(store_url).child("s.ome.zarr")
    data = RNG.integers(0, 255, (1, 40, 30), dtype=np.uint8)
    create_array(store.child("0"), data=data, chunks=(1, 16, 16))
    labels = (data[0] > 127).astype(np.uint8)
    create_array(store.child("labels", "mask", "0"), data=labels, chunks=(16, 16))
    build_pyramid(store.url, 2, 16, labels=False)
    build_pyramid(store.child("labels", "mask").url, 2, 16, labels=True)
    np.testing.assert_array_equal(open_array(store.child("labels", "mask", "1"))[:], labels[::2, ::2])
    level1 = data[0].astype(np.float64).reshape(20, 2, 15, 2).mean(axis=(1, 3))
    np.testing.assert_array_equal(open_array(store.child("1"))[0], np.rint(level1).astype(np.uint8))
    assert read_segpipe_attrs(store.url) == {}
    write_metadata(store.url, "s", 2, 2, ("background", "nucleus"), (0.5, 0.5), "micrometer", {"infer_key": "k"})
    assert read_segpipe_attrs(store.url) == {"infer_key": "k"}


def test_read_segpipe_attrs_tells_absent_from_broken(store_url: str) -> None:
    root = location(store_url)
    assert read_segpipe_attrs(root.child("nothing.zarr").url) == {}  # no store
    create_array(root.child("array.zarr"), shape=(2, 2), dtype="uint8")
    assert read_segpipe_attrs(root.child("array.zarr").url) == {}  # an array, not a group
    root.child("broken.zarr", "zarr.json").write_bytes(b"{truncated")
    with pytest.raises(ValueError):  # unreadable metadata is not "no attributes": it propagates
        read_segpipe_attrs(root.child("broken.zarr").url)


def test_export_tiff_to_any_store(store_url: str, tmp_path: Path) -> None:
    mask = RNG.integers(0, 3, (300, 280), dtype=np.uint8)
    mask_url = location(store_url).child("m.zarr").url
    create_array(mask_url, data=mask, chunks=(128, 128))
    out = location(store_url).child("scene", "scene_mask.tif")
    assert export_tiff(mask_url, out.url, GEO_TAGS, (30.0, 30.0)) == out.url
    (tmp_path / "copy.tif").write_bytes(out.read_bytes())
    with tifffile.TiffFile(tmp_path / "copy.tif") as tif:
        np.testing.assert_array_equal(tif.asarray(), mask)
        assert tif.pages.first.tags[33550].value == (30.0, 30.0, 0.0)
    assert out.parent.listdir() == ["scene_mask.tif"]  # nothing staged left beside it
