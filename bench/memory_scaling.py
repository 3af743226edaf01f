"""memory_scaling: peak RSS of the whole ``segpipe run`` process tree as the image grows to one gigapixel.

The model is near-free (a TorchScript 1x1 convolution with a card: 2 classes, size divisor 1, halo 0,
normalization none), so the run is I/O and bookkeeping and the gigapixel takes minutes. Inputs are
deflate-compressed tiled TIFFs written one 512^2 tile at a time (``bench.data.write_streamed_tiff``); no truth.
RSS is the sum over the command (which holds the Dask scheduler and nannies), its Dask worker processes and
Prefect's temporary API server (uvicorn), sampled every 0.1 s. Goals: < 2 GiB at 32768^2, and
32768^2 / 8192^2 <= 1.2 (flat in the pixel count).

``stages_megapixels_per_second`` (pixels over the summed stage seconds) is the pipeline's own throughput on
this machine when the model costs nothing: the CPU work a GPU worker's host must keep up with.
"""

from __future__ import annotations

import resource
import time
from typing import Any

from bench.data import POINTWISE_CARD, write_pointwise_model, write_streamed_tiff
from bench.goals import Goal, goal_list, size_note
from bench.harness import Context, ratio

NAME = "memory_scaling"
GOAL_MIB = 2048.0
GOAL_RATIO = 1.2


def measure(ctx: Context, size: int, model: str) -> dict[str, Any]:
    """Write the ``size``^2 input, then run the command on it with the near-free model."""
    path = ctx.workdir / "images" / f"stream{size}.tif"
    path.parent.mkdir(parents=True, exist_ok=True)
    ctx.log(f"memory_scaling: writing {size}^2 input")
    started = time.perf_counter()
    write_streamed_tiff(path, size)
    written = time.perf_counter() - started
    ctx.log(f"memory_scaling: segpipe run {size}^2 (1x1 model)")
    done = ctx.segpipe([path], None, f"memory-{size}", extra=["--model", model])
    megapixels = size * size / 1e6
    return {
        "size": size,
        "megapixels": megapixels,
        "stages_megapixels_per_second": ratio(megapixels, done.breakdown()["stages"]),
        "input_bytes": path.stat().st_size,
        "input_write_seconds": written,
        "bench_process_max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **done.summary(),
        "output": done.footprint(),
    }


def goals(ctx: Context, runs: dict[str, dict[str, Any]]) -> list[Goal]:
    """< 2 GiB at the largest size; largest / reference <= 1.2."""
    largest, reference = max(ctx.profile.memory), ctx.profile.memory_reference
    peak = runs[str(largest)]["peak_tree_rss_mib"]
    growth = ratio(peak, runs[str(reference)]["peak_tree_rss_mib"])
    note = size_note(largest, ctx.profile.memory_goal_size)
    return [
        Goal(NAME, f"peak RSS MiB {largest}^2", peak, "<", GOAL_MIB, note),
        Goal(NAME, f"peak RSS {largest}^2/{reference}^2", growth, "<=", GOAL_RATIO, note),
    ]


def run(ctx: Context) -> dict[str, Any]:
    model = str(write_pointwise_model(ctx.workdir / "pointwise"))
    runs = {str(size): measure(ctx, size, model) for size in ctx.profile.memory}
    checks = goals(ctx, runs)
    ratios: dict[str, float | None] = {
        f"peak RSS MiB {size}^2": entry["peak_tree_rss_mib"] for size, entry in runs.items()
    }
    ratios.update({goal.name: goal.measured for goal in checks})
    smallest, largest = min(ctx.profile.memory), max(ctx.profile.memory)
    ratios[f"pixels {largest}^2/{smallest}^2"] = (largest / smallest) ** 2
    return {
        "sizes": list(ctx.profile.memory),
        "reference_size": ctx.profile.memory_reference,
        "model": "TorchScript 1x1 convolution (bench.data.Pointwise)",
        "model_card": POINTWISE_CARD,
        "runs": runs,
        "ratios": ratios,
        "goals": goal_list(checks),
    }
