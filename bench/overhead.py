"""overhead: what a user waits for beyond the model: a whole run on a small image, a bad input, ``--help``.

- ``run``: ``segpipe run`` on a 512^2 sample with its truth (goal < 4 s), after the session's warm-up run (which
  is reported too: ``first_run``, the cost on a machine that never ran segpipe, with a new MLflow store);
- ``missing_file``: ``segpipe run`` on a file that does not exist, which must fail with exit code 2 before
  Prefect, Dask or MLflow start (goal < 1 s);
- ``help``: ``segpipe --help``.

The quick commands run ``REPEAT`` times; their median counts.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.goals import Goal, goal_list
from bench.harness import BenchError, Context, python_module
from bench.procs import CommandRun

NAME = "overhead"
REPEAT = 3
GOAL_RUN = 4.0
GOAL_ERROR = 1.0
EXIT_BAD_INPUT = 2


def repeated(ctx: Context, argv: list[str], expect: int) -> dict[str, Any]:
    """Median and every run of a quick command that must exit with ``expect``."""
    runs: list[CommandRun] = [ctx.run(argv) for _ in range(REPEAT)]
    codes = {done.returncode for done in runs}
    if codes != {expect}:
        raise BenchError(f"expected exit {expect}, got {sorted(codes)}: {runs[0].command}\n{runs[0].stderr[-1000:]}")
    return {
        "command": runs[0].command,
        "returncode": expect,
        "seconds": statistics.median(done.seconds for done in runs),
        "all_seconds": [done.seconds for done in runs],
        "stderr_first_line": (runs[0].stderr.strip().splitlines() or [""])[0],
    }


def run(ctx: Context) -> dict[str, Any]:
    size = ctx.profile.overhead
    image, truth = ctx.sample(size)
    ctx.log(f"overhead: segpipe run {size}^2")
    whole = ctx.segpipe([image], [truth], f"overhead-{size}")
    missing = str(ctx.workdir / "no-such-image.tif")
    ctx.log("overhead: a missing input, --help")
    error = repeated(
        ctx, python_module("segpipe.cli", "run", missing, "--out", str(ctx.output("missing"))), EXIT_BAD_INPUT
    )
    usage = repeated(ctx, python_module("segpipe.cli", "--help"), 0)
    first = ctx.warm_up_run
    checks = [
        Goal(NAME, f"seconds run {size}^2", whole.seconds, "<", GOAL_RUN),
        Goal(NAME, "seconds missing file", error["seconds"], "<", GOAL_ERROR),
    ]
    return {
        "size": size,
        "run": {**whole.summary(), "stages": whole.stage_seconds()},
        "first_run": first.summary() if first else None,
        "missing_file": error,
        "help": usage,
        "ratios": {
            **{goal.name: goal.measured for goal in checks},
            "seconds --help": usage["seconds"],
            "seconds first run (new MLflow store)": first.seconds if first else None,
        },
        "goals": goal_list(checks),
    }
