"""Crash-safe progress markers and fingerprints (segpipe/io/progress.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from segpipe.io.progress import ChunkLedger, file_identity, fingerprint, read_done, write_done
from segpipe.tiling import chunk_grid

from ..helpers import write_zarr


def test_fingerprint_is_stable_and_order_independent() -> None:
    a = fingerprint({"chunk": 64, "model": "abc", "card": {"halo": 32, "size_divisor": 4}})
    b = fingerprint({"card": {"size_divisor": 4, "halo": 32}, "model": "abc", "chunk": 64})
    assert a == b and len(a) == 20
    assert fingerprint({"chunk": 65, "model": "abc", "card": {"halo": 32, "size_divisor": 4}}) != a


def test_file_identity_changes_when_a_file_or_zarr_changes(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"one")
    first = file_identity(str(path))
    path.write_bytes(b"one two")
    assert file_identity(str(path)) != first
    source = write_zarr(tmp_path / "a.zarr", np.zeros((8, 8), np.uint8), (4, 4))
    before = file_identity(source.path)
    zarr.open_array(source.path, mode="r+")[4:, 4:] = 7  # writes a chunk file the all-zero array lacked
    after = file_identity(source.path)
    assert after["files"] == before["files"] + 1 and after["bytes"] > before["bytes"]
    assert after["path"] == str((tmp_path / "a.zarr").resolve())


def test_ledger_marks_chunks_and_drops_stale_fingerprints(tmp_path: Path) -> None:
    regions = chunk_grid(50, 70, 32)
    old = ChunkLedger(str(tmp_path), "infer", "old")
    assert old.is_fresh()
    old.reset()
    old.mark_done(regions[0])
    assert not old.is_fresh() and old.done_count() == 1
    ingest = ChunkLedger(str(tmp_path), "ingest", "x")
    ingest.reset()
    ingest.mark_done(regions[1])

    new = ChunkLedger(str(tmp_path), "infer", "new")
    assert new.is_fresh() and not new.is_done(regions[0])
    new.reset()
    assert old.is_fresh()  # the other fingerprint's markers are gone
    assert ingest.is_done(regions[1])  # another stage is left alone
    for r in regions[:3]:
        new.mark_done(r)
        new.mark_done(r)  # idempotent
    assert [new.is_done(r) for r in regions] == [True] * 3 + [False] * 3
    assert new.done_count() == 3


def test_done_json_round_trip(tmp_path: Path) -> None:
    assert read_done(str(tmp_path)) is None
    (tmp_path / "done.json").write_text("{not json")
    assert read_done(str(tmp_path)) is None
    write_done(str(tmp_path), "key1", {"iou": [0.5, None]})
    assert read_done(str(tmp_path)) == {"fingerprint": "key1", "report": {"iou": [0.5, None]}}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.json"]


def test_reset_also_drops_its_own_markers(tmp_path: Path) -> None:
    """A ledger whose output is being created anew must not keep markers for chunks of the old output."""
    region = chunk_grid(10, 10, 10)[0]
    ledger = ChunkLedger(str(tmp_path), "infer", "same")
    ledger.reset()
    ledger.mark_done(region)
    ledger.reset()
    assert not ledger.is_done(region) and ledger.done_count() == 0
