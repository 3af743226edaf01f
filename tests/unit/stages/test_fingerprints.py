"""Fingerprints: stable short hashes, and the input identity they are built from (segpipe/stages/fingerprints.py)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from segpipe.stages.fingerprints import fingerprint
from segpipe.storage import location, open_array

from ..helpers import write_zarr


def test_fingerprint_is_stable_and_order_independent() -> None:
    a = fingerprint({"chunk": 64, "model": "abc", "card": {"halo": 32, "size_divisor": 4}})
    b = fingerprint({"card": {"size_divisor": 4, "halo": 32}, "model": "abc", "chunk": 64})
    assert a == b
    assert len(a) == 20
    assert fingerprint({"chunk": 65, "model": "abc", "card": {"halo": 32, "size_divisor": 4}}) != a


def test_input_identity_changes_when_a_file_or_zarr_changes(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"one")
    first = asdict(location(str(path)).identity())
    assert set(first) == {"url", "size", "version"}
    assert first["url"] == str(path)
    path.write_bytes(b"one two")
    assert asdict(location(path).identity()) != first
    source = write_zarr(tmp_path / "a.zarr", np.zeros((8, 8), np.uint8), (4, 4))
    before = asdict(location(source.path).identity())
    open_array(source.path, mode="r+")[4:, 4:] = 7  # writes a chunk file the all-zero array lacked
    after = asdict(location(source.path).identity())
    assert after["size"] > before["size"]
    assert after["version"] != before["version"]
    assert after["url"] == str((tmp_path / "a.zarr").resolve())
