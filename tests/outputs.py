"""Helpers tests share to run segpipe as a user does and to compare what it wrote."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

DEFAULT_KILL_SEED = 0


def kill_seed() -> int:
    """The seed kill points are drawn from: ``SEGPIPE_KILL_SEED`` if set, else a fixed one; printed so a run replays."""
    seed = int(os.environ.get("SEGPIPE_KILL_SEED") or DEFAULT_KILL_SEED)
    print(f"kill points from seed {seed}: replay with SEGPIPE_KILL_SEED={seed}")
    return seed


def file_tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by relative path, with its bytes (two runs' outputs compare equal or not)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def start_segpipe_run(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """``segpipe run ARGS`` as a subprocess in its own session, so a test can kill its whole process tree."""
    return subprocess.Popen(
        [sys.executable, "-m", "segpipe.cli", "run", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def markers_done(image_dir: Path, stage: str) -> int:
    """Chunks marked done in the ``stage`` ledgers inside the image's store (``<name>.ome.zarr/.segpipe``).

    Polled while a run creates and replaces directories: one that vanishes while it is listed counts as none this
    time (the caller polls again)."""
    ledgers = image_dir / f"{image_dir.name}.ome.zarr" / ".segpipe"
    try:
        return sum(len(list(d.iterdir())) for d in ledgers.glob(f"{stage}-*")) if ledgers.exists() else 0
    except FileNotFoundError:
        return 0
