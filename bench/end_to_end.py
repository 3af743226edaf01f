"""end_to_end: the whole ``segpipe run`` command as a user runs it, and its flow stages, against the floor.

For each size: ``python -m segpipe.cli run IMAGE --truth TRUTH --out OUT --json --tracking-uri sqlite:///...``
in a subprocess (wall time from process start to exit), the stage seconds from its JSON report
(``images[0].seconds``, ``batch.seconds``), and the floor of the same image measured in this session. Ratios are
``floor_seconds / seconds`` (1.0 would be a pipeline that costs nothing beyond the model). Goals (issue 22), at
8192^2: floor/command >= 0.60, and the command within 1.10x of its own infer stage (command / infer stage seconds).
"""

from __future__ import annotations

from typing import Any

from bench.floor import floor_of
from bench.goals import Goal, goal_list, size_note
from bench.harness import Context, ratio

NAME = "end_to_end"
GOAL = 0.60
GOAL_OVER_INFER = 1.10


def measure(ctx: Context, size: int) -> dict[str, Any]:
    """The command, its stages and the floor at ``size``^2."""
    floor = floor_of(ctx, size)
    image, truth = ctx.sample(size)
    ctx.log(f"end_to_end: segpipe run {size}^2")
    done = ctx.segpipe([image], [truth], f"e2e-{size}")
    stages = done.stage_seconds()
    base = floor["floor_seconds"]
    return {
        "size": size,
        "megapixels": size * size / 1e6,
        "floor_seconds": base,
        "floor_megapixels_per_second": floor["megapixels_per_second"],
        "halo_ceiling": floor["halo_ceiling"],
        **done.summary(),
        "floor_over_command": ratio(base, done.seconds),
        "floor_over_flow": ratio(base, done.flow_seconds),
        "floor_over_infer": ratio(base, stages.get("infer")),
        "command_over_infer": ratio(done.seconds, stages.get("infer")),
        "floor_over_stage": {stage: ratio(base, seconds) for stage, seconds in stages.items()},
        "mean_dice": done.report["images"][0].get("mean_dice"),
        "output": done.footprint(),
    }


def run(ctx: Context) -> dict[str, Any]:
    runs = {str(size): measure(ctx, size) for size in ctx.profile.end_to_end}
    ratios: dict[str, float | None] = {}
    for size, entry in runs.items():
        ratios[f"floor/command {size}^2"] = entry["floor_over_command"]
        ratios[f"floor/flow {size}^2"] = entry["floor_over_flow"]
        ratios[f"floor/infer stage {size}^2"] = entry["floor_over_infer"]
        ratios[f"command/infer stage seconds {size}^2"] = entry["command_over_infer"]
    largest = max(ctx.profile.end_to_end)
    ceiling = runs[str(largest)]["halo_ceiling"]
    name = f"floor/command {largest}^2"
    note = size_note(largest, ctx.profile.goal_size)
    over_infer = f"command/infer stage seconds {largest}^2"
    checks = [
        Goal(NAME, name, ratios[name], ">=", GOAL, note),
        Goal(NAME, over_infer, ratios[over_infer], "<=", GOAL_OVER_INFER, note),
    ]
    return {
        "sizes": list(ctx.profile.end_to_end),
        "runs": runs,
        "ratios": ratios,
        "halo_ceiling": ceiling,
        "goals": goal_list(checks),
        "note": (
            f"with the default tile and the model's halo the pipeline computes 1/{ceiling:.3f} times the floor's "
            f"pixels, so floor/infer stays near or below {ceiling:.2f} (exactly, if its workers run the model as "
            "fast per pixel as the floor's single process)"
        ),
    }
