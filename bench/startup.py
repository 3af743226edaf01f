"""startup: what ``segpipe run`` spends besides the pixels, by name.

- ``interpreter``: ``python -c pass`` (median of ``REPEAT``);
- ``imports_help`` and ``imports_run``: ``python -X importtime`` of ``segpipe --help`` and of a whole
  ``segpipe run`` on one small image, each import's own time summed by top-level package (the packages
  a run imports and ``--help`` does not are what a run pays for; ``importtime`` itself slows imports down);
- ``probe``: ``python -m bench.startup_probe`` on the batch pair's small images: the command's steps made one by
  one and timed by name (torch, Prefect's import, temporary server and flow run, MLflow's import and store, the
  cluster's start and stop, the plan and model), then each image's fixed work (preview, metrics.json, done.json)
  and the batch's (report files, batch.json, results table, MLflow runs) per image.

No goal of its own: it says where ``overhead``'s and ``batch_vs_single``'s seconds go.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from typing import Any

from bench.harness import BenchError, Context, python_module

NAME = "startup"
REPEAT = 3
TOP_PACKAGES = 15
IMPORT_LINE = re.compile(r"import time:\s+(-?\d+) \|\s+-?\d+ \|\s*(\S+)")


def import_seconds(stderr: str) -> dict[str, float]:
    """Seconds of import per top-level package from ``-X importtime`` output, largest first."""
    totals: dict[str, float] = {}
    for line in stderr.splitlines():
        found = IMPORT_LINE.match(line)
        if found:
            package = found.group(2).split(".")[0]
            totals[package] = totals.get(package, 0.0) + int(found.group(1)) / 1e6
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def importtime(ctx: Context, *args: str) -> dict[str, Any]:
    """``python -X importtime -m segpipe.cli ARGS``: wall time and the top packages by import time."""
    finished = ctx.run([sys.executable, "-X", "importtime", "-m", "segpipe.cli", *args])
    if finished.returncode != 0:
        raise BenchError(f"exit {finished.returncode}: {finished.command}\n{finished.stderr[-1000:]}")
    packages = import_seconds(finished.stderr)
    return {
        "command": finished.command,
        "seconds": finished.seconds,
        "import_seconds": sum(packages.values()),
        "packages": dict(list(packages.items())[:TOP_PACKAGES]),
    }


def run(ctx: Context) -> dict[str, Any]:
    pair = ctx.profile.batch[0]
    image, truth = ctx.sample(ctx.profile.overhead)
    ctx.log("startup: the interpreter, imports of --help and of a run")
    bare = [ctx.run([sys.executable, "-c", "pass"]).seconds for _ in range(REPEAT)]
    helped = importtime(ctx, "--help")
    ctx.warm_up()
    out = str(ctx.output("startup-imports"))
    ran = importtime(ctx, "run", str(image), "--truth", str(truth), "--out", out, "--tracking-uri", ctx.tracking_uri)
    only_run = {name: seconds for name, seconds in ran["packages"].items() if name not in helped["packages"]}
    samples = [ctx.sample(pair.small, seed) for seed in range(pair.count)]
    ctx.log(f"startup: the command's steps one by one on {pair.count} x {pair.small}^2")
    argv = python_module("bench.startup_probe", *(str(s[0]) for s in samples), "--truth", *(str(s[1]) for s in samples))
    probed = ctx.run([*argv, "--out", str(ctx.output("startup-probe")), "--tracking-uri", ctx.tracking_uri])
    if probed.returncode != 0:
        raise BenchError(f"exit {probed.returncode}: {probed.command}\n{probed.stderr[-1000:]}")
    probe = json.loads(probed.stdout.strip().splitlines()[-1])
    steps, per_image = probe["steps"], probe["per_image"]
    ratios: dict[str, float | None] = {"seconds python -c pass": statistics.median(bare)}
    ratios.update({f"seconds {name}": float(value) for name, value in steps.items()})
    ratios.update({f"seconds per image {name}": float(value) for name, value in per_image.items()})
    ratios["seconds per image prefect task run"] = float(probe["prefect_task_run_each"])
    return {
        "interpreter": {"all_seconds": bare, "seconds": statistics.median(bare)},
        "imports_help": helped,
        "imports_run": {**ran, "not_in_help": only_run},
        "probe": {"command": probed.command, "seconds": probed.seconds, **probe},
        "ratios": ratios,
        "goals": [],
    }
