"""Run segpipe's benchmarks: one JSON per benchmark and a summary of the goals, in bench/results.

    python -m bench [--quick] [--only NAME ...] [--out bench/results]

Each benchmark measures both sides of its ratios in this one run; the summary lists every goal from the
performance issue with the measured value and pass/miss, and a short table is printed at the end.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import (
    batch_vs_single,
    compile,
    end_to_end,
    floor,
    foreground,
    memory_scaling,
    monai_compare,
    objects,
    overhead,
    overlap,
    resolution,
    s3_vs_local,
    startup,
)
from bench.common import environment, save_json
from bench.goals import table
from bench.harness import Context
from bench.profiles import FULL, QUICK

BENCHMARKS: dict[str, ModuleType] = {
    module.NAME: module
    for module in (
        floor,
        end_to_end,
        monai_compare,
        memory_scaling,
        overhead,
        batch_vs_single,
        startup,
        s3_vs_local,
        overlap,
        objects,
        foreground,
        resolution,
        compile,
    )
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a few minutes, for checking the harness")
    parser.add_argument(
        "--only", nargs="+", choices=list(BENCHMARKS), metavar="NAME", help=f"run only these: {', '.join(BENCHMARKS)}"
    )
    parser.add_argument("--out", default="bench/results", help="folder for the JSON results (default bench/results)")
    parser.add_argument("--workdir", help="scratch folder for images and outputs (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--device", default="cpu", help="where the floor runs: cpu (default) or cuda[:N]")
    return parser.parse_args(argv)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_one(ctx: Context, name: str, invocation: str) -> dict[str, Any]:
    """One benchmark's result with the facts every result records; an exception becomes ``error``."""
    started, header = time.perf_counter(), {"benchmark": name, "profile": ctx.profile.name, "quick": ctx.quick}
    header.update({"command": invocation, "started": now(), "machine": environment()})
    try:
        result = BENCHMARKS[name].run(ctx)
    except Exception as exc:  # one failed benchmark must not lose the others' results
        ctx.log(f"{name} failed:\n{traceback.format_exc()}")
        result = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0], "ratios": {}, "goals": []}
    return {**header, **result, "seconds": time.perf_counter() - started}


def run_benchmarks(ctx: Context, names: list[str], out: Path, invocation: str) -> dict[str, Any]:
    """Run ``names`` in order, write ``OUT/NAME.json`` for each and ``OUT/summary.json``; return the summary."""
    summary: dict[str, Any] = {"benchmark": "summary", "profile": ctx.profile.name, "quick": ctx.quick}
    summary.update({"command": invocation, "started": now(), "machine": environment(), "benchmarks": {}})
    summary["goals"] = []
    for name in names:
        ctx.log(f"--- {name}")
        result = run_one(ctx, name, invocation)
        path = save_json(out / f"{name}.json", result)
        summary["benchmarks"][name] = {
            "file": str(path),
            "seconds": result["seconds"],
            "ratios": result["ratios"],
            "error": result.get("error"),
        }
        summary["goals"].extend(result["goals"])
    summary["warm_up"] = ctx.warm_up_run.summary() if ctx.warm_up_run else None
    summary["finished"] = now()
    save_json(out / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [name for name in BENCHMARKS if not args.only or name in args.only]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="segpipe-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = Context(QUICK if args.quick else FULL, workdir.resolve(), device=args.device)
    invocation = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        summary = run_benchmarks(ctx, names, Path(args.out).resolve(), invocation)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(summary))
    print(f"results: {Path(args.out) / 'summary.json'}" + (f"; scratch kept in {workdir}" if args.keep else ""))
    return 1 if any(entry["error"] for entry in summary["benchmarks"].values()) else 0
