"""objects: what ``--objects`` adds to a run (components, the table and the polygons), in time and in memory.

Time: ``segpipe run IMAGE --truth TRUTH`` against the same command with ``--objects``, wall time of each whole
command on the synthetic nuclei sample of ``objects``^2, ``REPEATS`` pairs alternating, the fastest of each side
compared. Goal: with / without <= 1.3 at 8192^2 (objects add at most 30 %). Beside it, the objects stage's
seconds against the rest of the same run, which the other stages' drift between runs does not move.

Memory: ``segpipe run LATTICE --model POINTWISE --objects`` on the lattice image of ``objects_memory``^2
(``bench.data.write_lattice_tiff``: separate discs 32 pixels apart, 1,050,625 of them at 32768^2, many across
chunk borders) with the near-free model of ``memory_scaling``, so the run is the objects stage's own work. The
objects found are counted from the report and from the rows of the image's ``objects.parquet``. Goal: the peak
RSS of the whole process tree < 2 GiB at 32768^2.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bench.data import LATTICE_PITCH, lattice_count, write_lattice_tiff, write_pointwise_model
from bench.goals import Goal, goal_list, size_note
from bench.harness import Context, ratio

NAME = "objects"
GOAL = 1.3
REPEATS = 2  # pairs of runs; each side's fastest is compared
GOAL_MIB = 2048.0


def table_rows(url: str | None) -> int | None:
    """Rows of a local ``objects.parquet`` (from its footer), or None when there is none."""
    if not url or "://" in url or not Path(url).is_file():
        return None
    return int(pq.read_metadata(url).num_rows)


def gigapixel(ctx: Context) -> tuple[dict[str, Any], Goal]:
    """The ``--objects`` run on the lattice image with the near-free model, and its memory goal."""
    size = ctx.profile.objects_memory
    path = ctx.workdir / "images" / f"lattice{size}.tif"
    path.parent.mkdir(parents=True, exist_ok=True)
    written = None
    if not path.exists():
        ctx.log(f"objects: writing the {size}^2 lattice input ({lattice_count(size)} objects)")
        started = time.perf_counter()
        write_lattice_tiff(path, size)
        written = time.perf_counter() - started
    model = str(write_pointwise_model(ctx.workdir / "pointwise"))
    ctx.log(f"objects: segpipe run {size}^2 lattice --objects (1x1 model)")
    done = ctx.segpipe([path], None, f"objects-memory-{size}", extra=("--model", model, "--objects"))
    entry = done.report["images"][0]
    counts = entry.get("object_counts") or None
    peak = done.run.peak_rss_mib
    note = size_note(size, ctx.profile.memory_goal_size)
    check = Goal(NAME, f"objects peak RSS MiB {size}^2", peak, "<", GOAL_MIB, note)
    result = {
        "size": size,
        "megapixels": size * size / 1e6,
        "pitch": LATTICE_PITCH,
        "objects_drawn": lattice_count(size),
        "objects_counted": sum(counts) if counts else None,
        "object_counts": counts,
        "objects_table_rows": table_rows(entry.get("objects_table")),
        "objects_stage_seconds": entry.get("seconds", {}).get("objects"),
        "input_bytes": path.stat().st_size,
        "input_write_seconds": written,
        **done.summary(),
        "output": done.footprint(),
    }
    return result, check


def run(ctx: Context) -> dict[str, Any]:
    size = ctx.profile.objects
    image, truth = ctx.sample(size)
    plains, founds = [], []
    for attempt in range(REPEATS):  # alternating: this machine's speed drifts between runs
        ctx.log(f"objects: segpipe run {size}^2 without, then with --objects ({attempt + 1} of {REPEATS})")
        plains.append(ctx.segpipe([image], [truth], f"objects-off-{size}-{attempt}"))
        founds.append(ctx.segpipe([image], [truth], f"objects-on-{size}-{attempt}", extra=("--objects",)))
    plain, found = min(plains, key=lambda r: r.seconds), min(founds, key=lambda r: r.seconds)
    seconds = ratio(found.seconds, plain.seconds)
    entry = found.report["images"][0]
    stage = entry.get("seconds", {}).get("objects")
    check = Goal(NAME, f"objects/plain seconds {size}^2", seconds, "<=", GOAL)
    memory, memory_check = gigapixel(ctx)
    return {
        "size": size,
        "plain": plain.summary(),
        "with_objects": found.summary(),
        "plain_seconds_each": [r.seconds for r in plains],
        "with_objects_seconds_each": [r.seconds for r in founds],
        "objects_stage_seconds": stage,
        "object_counts": entry.get("object_counts"),
        "memory": memory,
        "ratios": {
            check.name: seconds,
            f"objects stage/rest of the run seconds {size}^2": ratio(stage, found.seconds - stage) if stage else None,
            memory_check.name: memory_check.measured,
            f"objects counted {memory['size']}^2": _float(memory["objects_counted"]),
        },
        "goals": goal_list([check, memory_check]),
    }


def _float(value: int | None) -> float | None:
    return None if value is None else float(value)
