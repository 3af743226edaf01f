"""Crash-safe chunk markers inside the output store and the commit record, on a local folder, ``memory://``
and S3 (segpipe/io/ledger.py)."""

from __future__ import annotations

import pickle

from segpipe.io.ledger import ChunkLedger, read_commit, write_commit
from segpipe.storage import location
from segpipe.tiling import chunk_grid


def test_ledger_marks_chunks_and_drops_stale_fingerprints(store_url: str) -> None:
    regions = chunk_grid(50, 70, 32)
    old = ChunkLedger(store_url, "infer", "old")
    assert old.is_fresh()
    old.reset()
    old.mark_done(regions[0])
    assert not old.is_fresh()
    assert old.done_count() == 1
    ingest = ChunkLedger(location(store_url), "ingest", "x")
    ingest.reset()
    ingest.mark_done(regions[1])

    new = ChunkLedger(store_url, "infer", "new")
    assert new.is_fresh()
    assert not new.is_done(regions[0])
    new.reset()
    assert old.is_fresh()
    assert old.done_regions() == set()  # the other fingerprint's markers are gone
    assert ingest.is_done(regions[1])  # another stage is left alone
    for r in regions[:3]:
        new.mark_done(r)
        new.mark_done(r)  # idempotent
    assert [new.is_done(r) for r in regions] == [True] * 3 + [False] * 3
    assert new.done_regions() == {(r.y0, r.x0) for r in regions[:3]}
    assert new.todo(regions) == regions[3:]
    assert new.done_count() == 3


def test_ledger_markers_live_inside_the_store(store_url: str) -> None:
    store = location(store_url).child("scene.ome.zarr")
    ledger = ChunkLedger(store, "infer", "key")
    ledger.mark_done(chunk_grid(10, 10, 10)[0])
    assert store.child(".segpipe", "infer-key").listdir() == ["0_0"]
    clone = pickle.loads(pickle.dumps(ledger))  # chunk tasks carry it to workers
    assert clone == ledger
    assert clone.done_regions() == {(0, 0)}
    assert "secret" not in repr(clone)


def test_reset_also_drops_its_own_markers(store_url: str) -> None:
    """A ledger whose output is being created anew must not keep markers for chunks of the old output."""
    region = chunk_grid(10, 10, 10)[0]
    ledger = ChunkLedger(store_url, "infer", "same")
    ledger.reset()
    ledger.mark_done(region)
    ledger.reset()
    assert not ledger.is_done(region)
    assert ledger.done_count() == 0
    assert ledger.is_fresh()


def test_commit_record_round_trip(store_url: str) -> None:
    where = location(store_url).child("scene")
    assert read_commit(where) is None
    where.child("done.json").write_bytes(b"{not json")
    assert read_commit(where) is None
    write_commit(where, "key1", {"iou": [0.5, None]})
    assert read_commit(where) == {"fingerprint": "key1", "report": {"iou": [0.5, None]}}
    assert where.listdir() == ["done.json"]
