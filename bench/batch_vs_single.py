"""batch_vs_single: many small images in one command against one image of the same pixel count.

``segpipe run A B C ... --truth ...`` on ``count`` images of ``small``^2 (seeds 0..count-1) against
``segpipe run X --truth ...`` on one ``single``^2 image (``count * small^2 == single^2``), wall time of each
whole command, ``rounds`` times in turn (the profile's), the median runs compared. Goal: batch / single <= 1.2
(per-image cost must not dominate a batch).
"""

from __future__ import annotations

from typing import Any

from bench.goals import Goal, goal_list
from bench.harness import Context, SegpipeRun, ratio
from bench.profiles import BatchPair

NAME = "batch_vs_single"
GOAL = 1.2


def measure(ctx: Context, pair: BatchPair) -> dict[str, Any]:
    samples = [ctx.sample(pair.small, seed) for seed in range(pair.count)]
    images, truths = [s[0] for s in samples], [s[1] for s in samples]
    image, truth = ctx.sample(pair.single)
    batches, singles = [], []
    for turn in range(1, pair.rounds + 1):  # in turn, so that a slower spell of the machine weighs on both
        ctx.log(f"batch_vs_single: segpipe run {pair.count} x {pair.small}^2 (round {turn} of {pair.rounds})")
        batches.append(ctx.segpipe(images, truths, f"batch-{pair.count}x{pair.small}"))
        ctx.log(f"batch_vs_single: segpipe run 1 x {pair.single}^2 (round {turn} of {pair.rounds})")
        singles.append(ctx.segpipe([image], [truth], f"single-{pair.single}"))
    batch, single = _median_run(batches), _median_run(singles)
    return {
        "count": pair.count,
        "small": pair.small,
        "single": pair.single,
        "megapixels": pair.count * pair.small**2 / 1e6,
        "rounds": pair.rounds,
        "batch": batch.summary(),
        "single_run": single.summary(),
        "batch_seconds_each": [run.seconds for run in batches],
        "single_seconds_each": [run.seconds for run in singles],
        "seconds_ratio": ratio(batch.seconds, single.seconds),
        "flow_seconds_ratio": ratio(batch.flow_seconds, single.flow_seconds),
    }


def _median_run(runs: list[SegpipeRun]) -> SegpipeRun:
    """The run of median wall time (the lower middle one of an even count)."""
    return sorted(runs, key=lambda run: run.seconds)[(len(runs) - 1) // 2]


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
