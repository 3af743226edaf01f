"""batch_vs_single: many small images in one command against one image of the same pixel count.

``segpipe run A B C ... --truth ...`` on ``count`` images of ``small``^2 (seeds 0..count-1) against
``segpipe run X --truth ...`` on one ``single``^2 image (``count * small^2 == single^2``), wall time of each
whole command. Goal: batch / single <= 1.2 (per-image cost must not dominate a batch).
"""

from __future__ import annotations

from typing import Any

from bench.goals import Goal, goal_list
from bench.harness import Context, ratio
from bench.profiles import BatchPair

NAME = "batch_vs_single"
GOAL = 1.2


def measure(ctx: Context, pair: BatchPair) -> dict[str, Any]:
    samples = [ctx.sample(pair.small, seed) for seed in range(pair.count)]
    ctx.log(f"batch_vs_single: segpipe run {pair.count} x {pair.small}^2")
    batch = ctx.segpipe([s[0] for s in samples], [s[1] for s in samples], f"batch-{pair.count}x{pair.small}")
    image, truth = ctx.sample(pair.single)
    ctx.log(f"batch_vs_single: segpipe run 1 x {pair.single}^2")
    single = ctx.segpipe([image], [truth], f"single-{pair.single}")
    return {
        "count": pair.count,
        "small": pair.small,
        "single": pair.single,
        "megapixels": pair.count * pair.small**2 / 1e6,
        "batch": batch.summary(),
        "single_run": single.summary(),
        "seconds_ratio": ratio(batch.seconds, single.seconds),
        "flow_seconds_ratio": ratio(batch.flow_seconds, single.flow_seconds),
    }


def label(pair: BatchPair) -> str:
    return f"batch/single {pair.count}x{pair.small}^2 vs {pair.single}^2"


def run(ctx: Context) -> dict[str, Any]:
    runs = {label(pair): measure(ctx, pair) for pair in ctx.profile.batch}
    checks = [Goal(NAME, name, entry["seconds_ratio"], "<=", GOAL) for name, entry in runs.items()]
    ratios = {goal.name: goal.measured for goal in checks}
    ratios.update({f"{name} (flow only)": entry["flow_seconds_ratio"] for name, entry in runs.items()})
    return {
        "pairs": [vars(pair) for pair in ctx.profile.batch],
        "runs": runs,
        "ratios": ratios,
        "goals": goal_list(checks),
    }
