"""monai: segpipe against MONAI's ``sliding_window_inference`` on the same model, image, window and batch.

Both run as commands, one after the other, each with its process tree's peak RSS sampled alone: segpipe as
``segpipe run IMAGE --out ... --json`` (no truth, so no evaluation; it still writes the OME-Zarr with the input
copy and pyramids, the preview and the MLflow run), MONAI as ``python -m bench.monai_infer`` (whole image in
memory, window = tile + 2 halo, overlap = 2 halo / window so both feed the model the same windows, argmax
written as a TIFF). Ratios: segpipe/MONAI wall time and peak RSS (below 1: segpipe is faster or smaller), and
the fraction of pixels where the two masks agree. MONAI runs the model as its users load it (NCHW), and once more
with the model in channels-last layout as segpipe runs it (``seconds_ratio_channels_last``), so the figures show
how much of the difference is layout and how much is the pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from bench.floor import TILE, pipeline_batch, window_edge
from bench.goals import Goal, goal_list
from bench.harness import BenchError, Context, SegpipeRun, python_module, ratio
from bench.procs import CommandRun
from segpipe.storage import open_array

NAME = "monai"
RSS_GOAL = 0.5  # peak RSS of segpipe's whole process tree <= half MONAI's, at the largest size


def run_monai(ctx: Context, image: Path, size: int, channels_last: bool = False) -> tuple[CommandRun, Path]:
    """The MONAI command on ``image``; returns the run and the mask it wrote."""
    edge, halo = window_edge()
    mask = ctx.output(f"monai-{size}" + ("-nhwc" if channels_last else "")).with_suffix(".tif")
    mask.parent.mkdir(parents=True, exist_ok=True)
    options = ["--window", str(edge), "--overlap", f"{2 * halo / edge:g}", "--batch-size", str(pipeline_batch())]
    options += ["--channels-last"] if channels_last else []
    done = ctx.run(python_module("bench.monai_infer", str(image), str(mask), *options))
    if done.returncode != 0:
        raise BenchError(f"exit {done.returncode}: {done.command}\n{done.stderr[-2000:]}")
    return done, mask


def agreement(segpipe_mask: str, monai_mask: Path, rows: int = 1024) -> float:
    """Fraction of pixels with the same label in both masks, read ``rows`` rows at a time."""
    ours, theirs = open_array(segpipe_mask), tifffile.imread(monai_mask)
    if tuple(ours.shape) != tuple(theirs.shape):
        raise BenchError(f"mask shapes differ: segpipe {ours.shape}, MONAI {theirs.shape}")
    equal = 0
    for y in range(0, theirs.shape[0], rows):
        equal += int(np.count_nonzero(np.asarray(ours[y : y + rows]) == theirs[y : y + rows]))
    return equal / theirs.size


def measure(ctx: Context, size: int) -> dict[str, Any]:
    image, _ = ctx.sample(size)
    ctx.log(f"monai: segpipe run {size}^2 (no truth)")
    ours: SegpipeRun = ctx.segpipe([image], None, f"vs-monai-{size}")
    ctx.log(f"monai: sliding_window_inference {size}^2")
    theirs, mask = run_monai(ctx, image, size)
    ctx.log(f"monai: sliding_window_inference {size}^2, model in channels-last layout")
    theirs_nhwc, _ = run_monai(ctx, image, size, channels_last=True)
    edge, halo = window_edge()
    return {
        "size": size,
        "megapixels": size * size / 1e6,
        "window": edge,
        "overlap": 2 * halo / edge,
        "tile": TILE,
        "halo": halo,
        "batch_size": pipeline_batch(),
        "segpipe": {**ours.summary(), "infer_seconds": ours.stage_seconds().get("infer")},
        "monai": {**theirs.summary(), "steps": _steps(theirs)},
        "monai_channels_last": {**theirs_nhwc.summary(), "steps": _steps(theirs_nhwc)},
        "seconds_ratio": ratio(ours.seconds, theirs.seconds),
        "seconds_ratio_channels_last": ratio(ours.seconds, theirs_nhwc.seconds),
        "rss_ratio": ratio(ours.run.peak_rss_bytes, theirs.peak_rss_bytes),
        "agreement": agreement(ours.report["images"][0]["mask"], mask),
    }


def _steps(done: CommandRun) -> dict[str, float]:
    """MONAI's own step seconds from the JSON line it printed."""
    return dict(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])


def run(ctx: Context) -> dict[str, Any]:
    runs = {str(size): measure(ctx, size) for size in ctx.profile.monai}
    ratios: dict[str, float | None] = {}
    for size, entry in runs.items():
        ratios[f"segpipe/MONAI seconds {size}^2"] = entry["seconds_ratio"]
        ratios[f"segpipe/MONAI-NHWC seconds {size}^2"] = entry["seconds_ratio_channels_last"]
        ratios[f"segpipe/MONAI peak RSS {size}^2"] = entry["rss_ratio"]
        ratios[f"mask agreement {size}^2"] = entry["agreement"]
    goal_checks = goals(ratios, list(ctx.profile.monai))
    return {"sizes": list(ctx.profile.monai), "runs": runs, "ratios": ratios, "goals": goal_list(goal_checks)}


def goals(ratios: dict[str, float | None], sizes: list[int]) -> list[Goal]:
    """The issues': the whole command faster than MONAI at every size, and than MONAI tuned (channels-last, batch 1)
    at the smallest; half its memory at the largest."""
    sizes = sorted(sizes)
    faster = [
        Goal(NAME, f"segpipe/MONAI seconds {size}^2", ratios[f"segpipe/MONAI seconds {size}^2"], "<", 1.0)
        for size in sizes
    ]
    tuned = f"segpipe/MONAI-NHWC seconds {sizes[0]}^2"
    faster.append(Goal(NAME, tuned, ratios.get(tuned), "<", 1.0))
    name = f"segpipe/MONAI peak RSS {sizes[-1]}^2"
    return [*faster, Goal(NAME, name, ratios[name], "<=", RSS_GOAL)]
