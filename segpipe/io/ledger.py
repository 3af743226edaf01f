"""The chunk ledger: which output chunks are finished, and the commit record that says an image is finished.

Chunks are keyed by a fingerprint of everything they depend on (``segpipe.stages.fingerprints``).

A chunk is marked done (an empty marker object) only after its Zarr write has returned, so a process killed at
any moment leaves at worst a chunk that is rewritten on the next run. Markers live inside the output store,
``<store>/.segpipe/<stage>-<fingerprint>/<y0>_<x0>``, on any backend; a different fingerprint (another model,
input or setting) never sees them, and one listing reads them all (no request per chunk on an object store).
The commit record ``<location>/done.json`` is written last and atomically; an image whose record carries the
current fingerprint is finished and skipped whole.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from segpipe.storage import Location, location
from segpipe.storage.lease import LeaseFence
from segpipe.tiling import Region

STATE_DIR = ".segpipe"
COMMIT_NAME = "done.json"
MARKER = re.compile(r"^(\d+)_(\d+)$")


class ChunkLedger:
    """Done-markers of one stage (``ingest`` or ``infer``) of one image, kept inside its output store.

    Small and picklable (a URL and two strings): chunk tasks carry it and mark their chunk done themselves.
    """

    def __init__(
        self, store: str | os.PathLike[str] | Location, stage: str, key: str, fence: LeaseFence | None = None
    ) -> None:
        """The ledger of ``stage`` under fingerprint ``key`` in ``store``; nothing is read or written."""
        self.state = location(store).child(STATE_DIR)
        self.root = self.state.child(f"{stage}-{key}")
        self.stage = stage
        self.key = key
        self.fence = fence

    def check_fence(self) -> None:
        """Raise ``LeaseLost`` unless this run still holds the output's lease (no-op without a lease)."""
        if self.fence is not None:
            self.fence.check()

    def __repr__(self) -> str:
        """``ChunkLedger('<its folder's URL>')``."""
        return f"ChunkLedger({self.root.url!r})"

    def __eq__(self, other: object) -> bool:
        """Ledgers are equal when they keep their markers in the same folder."""
        return isinstance(other, ChunkLedger) and other.root == self.root

    def __hash__(self) -> int:
        """The hash of the markers' folder, consistent with ``__eq__``."""
        return hash(self.root)

    def reset(self) -> None:
        """Start this stage afresh: drop every ledger of the stage, other fingerprints' and this one's.

        For when the stage's output is being created anew.
        """
        self.check_fence()
        for name in self.state.listdir():
            if name.startswith(f"{self.stage}-"):
                self.state.child(name).remove()

    def is_fresh(self) -> bool:
        """True when no chunk is marked done under this fingerprint (its outputs may be created anew)."""
        return not self.done_regions()

    def done_regions(self) -> set[tuple[int, int]]:
        """Origins ``(y0, x0)`` of the chunks marked done, from one listing."""
        found = (MARKER.match(name) for name in self.root.listdir())
        return {(int(m.group(1)), int(m.group(2))) for m in found if m}

    def todo(self, regions: Iterable[Region]) -> list[Region]:
        """The ``regions`` not yet marked done, in order (one listing)."""
        done = self.done_regions()
        return [r for r in regions if (r.y0, r.x0) not in done]

    def _marker(self, region: Region) -> Location:
        return self.root.child(f"{region.y0}_{region.x0}")

    def is_done(self, region: Region) -> bool:
        """Whether ``region`` is marked done: one request; for many regions use ``todo``/``done_regions``."""
        return self._marker(region).exists()

    def mark_done(self, region: Region) -> None:
        """Mark ``region`` done; call only after its write has returned."""
        self.check_fence()
        self._marker(region).write_bytes(b"")

    def done_count(self) -> int:
        """How many chunks are marked done (one listing)."""
        return len(self.done_regions())


def read_commit(where: str | os.PathLike[str] | Location) -> dict[str, Any] | None:
    """The commit record (``done.json``) at ``where``, or None when there is none or it is not JSON."""
    try:
        record = location(where).child(COMMIT_NAME).read_json()
    except (FileNotFoundError, ValueError):
        return None
    return dict(record) if isinstance(record, dict) else None


def write_commit(where: str | os.PathLike[str] | Location, key: str, report: dict[str, Any]) -> None:
    """Write the commit record, with the fingerprint the image was finished under.

    Written last and atomically (local: temp file and rename; object store: one PUT).
    """
    location(where).child(COMMIT_NAME).write_json({"fingerprint": key, "report": report})
