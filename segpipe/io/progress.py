"""Crash-safe progress: which output chunks are finished, keyed by a fingerprint of everything they depend on.

A chunk is marked done (an empty marker file) only after its Zarr write has returned, so a process killed at
any moment leaves at worst a chunk that is rewritten on the next run. Markers live under
``<image out>/.segpipe/<fingerprint>/``; a different fingerprint (another model, input or setting) never sees
them. An image whose ``done.json`` carries the current fingerprint is finished and skipped whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from segpipe.tiling import Region

STATE_DIR = ".segpipe"


def file_identity(path: str) -> dict[str, Any]:
    """Cheap identity of a file or Zarr directory: resolved path, size and modification time of its files."""
    target = Path(path).resolve()
    files = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
    stats = [p.stat() for p in files]
    return {
        "path": str(target),
        "bytes": sum(s.st_size for s in stats),
        "mtime_ns": max((s.st_mtime_ns for s in stats), default=0),
        "files": len(files),
    }


def fingerprint(parts: dict[str, Any]) -> str:
    """A short, stable hash of a JSON-able description."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


class ChunkLedger:
    """Done-markers of one stage of one image (``stage`` = ``ingest`` or ``infer``)."""

    def __init__(self, image_dir: str, stage: str, key: str) -> None:
        self.root = Path(image_dir) / STATE_DIR / f"{stage}-{key}"
        self.stage_dir = Path(image_dir) / STATE_DIR
        self.stage = stage

    def reset(self) -> None:
        """Start this stage afresh: drop every ledger of the stage (other fingerprints' and this one's),
        for when its output is being created anew."""
        if self.stage_dir.exists():
            for ledger in self.stage_dir.glob(f"{self.stage}-*"):
                shutil.rmtree(ledger, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)

    def is_fresh(self) -> bool:
        """True when no ledger of this fingerprint exists yet (outputs must be created anew)."""
        return not self.root.exists()

    def _marker(self, region: Region) -> Path:
        return self.root / f"{region.y0}_{region.x0}"

    def is_done(self, region: Region) -> bool:
        return self._marker(region).exists()

    def mark_done(self, region: Region) -> None:
        self._marker(region).touch()

    def done_count(self) -> int:
        return sum(1 for _ in self.root.iterdir()) if self.root.exists() else 0


def read_done(image_dir: str) -> dict[str, Any] | None:
    """The ``done.json`` of a finished image, or None."""
    path = Path(image_dir) / "done.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def write_done(image_dir: str, key: str, report: dict[str, Any]) -> None:
    """Mark an image finished (atomically), recording the fingerprint it was finished under."""
    path = Path(image_dir) / "done.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"fingerprint": key, "report": report}, default=str))
    os.replace(tmp, path)
