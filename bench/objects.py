"""objects: what ``--objects`` adds to a run (components, the table and the polygons) at one size.

``segpipe run IMAGE --truth TRUTH`` against the same command with ``--objects``, wall time of each whole command
on the synthetic nuclei sample of ``objects``^2. Goal: with / without <= 1.3 at 8192^2 (objects add at most 30 %).
"""

from __future__ import annotations

from typing import Any

from bench.goals import Goal, goal_list
from bench.harness import Context, ratio

NAME = "objects"
GOAL = 1.3


def run(ctx: Context) -> dict[str, Any]:
    size = ctx.profile.objects
    image, truth = ctx.sample(size)
    ctx.log(f"objects: segpipe run {size}^2 without, then with --objects")
    plain = ctx.segpipe([image], [truth], f"objects-off-{size}")
    found = ctx.segpipe([image], [truth], f"objects-on-{size}", extra=("--objects",))
    seconds = ratio(found.seconds, plain.seconds)
    entry = found.report["images"][0]
    check = Goal(NAME, f"objects/plain seconds {size}^2", seconds, "<=", GOAL)
    return {
        "size": size,
        "plain": plain.summary(),
        "with_objects": found.summary(),
        "objects_stage_seconds": entry.get("seconds", {}).get("objects"),
        "object_counts": entry.get("object_counts"),
        "ratios": {check.name: seconds},
        "goals": goal_list([check]),
    }
