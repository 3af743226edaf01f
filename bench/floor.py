"""floor: the built-in model's forward pass over the image's own pixels, once: the compute no pipeline can avoid.

The image is read and normalised before the clock starts (no I/O is timed), cut into windows of the edge the
pipeline feeds the model (tile + 2 halo, rounded up to the size divisor: 312 for the default tile 256 and the
U-Net's halo 28), without overlap, ``ceil(H * W / window^2)`` of them, as many per forward pass as the pipeline
puts there (``pipeline_batch``), in
``torch.inference_mode``, in the model's fastest memory layout (channels-last, as segpipe's predictor runs it),
the very model object the pipeline's workers run: ``load_predictor`` with segpipe run's default ``--compile``
(``fold``: conv + batch norm merged; a compiled mode's compile runs before the clock and is reported). On
a CPU it is timed two ways, and the faster counts: one stream of passes using every core, and one stream per core
with one torch thread each (how a local cluster runs it); ``--device cuda``: one stream on the GPU, inputs
already on it. Only the forward calls are timed; a small image is passed over again (up to 3 s, 5 passes) and the
fastest pass counts. ``floor_seconds`` scales that pass to exactly ``H * W`` pixels.

The pipeline computes every pixel of a tile's halo too, so its inference reads ``(window / tile)^2`` times the
floor's pixels: ``halo_ceiling = (tile / window)^2`` is the best floor/infer ratio it can reach.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

from bench.harness import Context
from segpipe import normalize
from segpipe.config import AUTO, InferenceConfig, TilingConfig
from segpipe.models import Predictor, load_predictor, resolve_model
from segpipe.tiling import round_up

NAME = "floor"
TILE = TilingConfig().tile  # segpipe run's default --tile
COMPILE = InferenceConfig().compile  # segpipe run's default --compile
MIN_SECONDS = 3.0
MAX_PASSES = 5


def window_edge(tile: int = TILE) -> tuple[int, int]:
    """(window, halo) of the built-in model as the pipeline uses it: round_up(tile + 2 halo, size_divisor)."""
    card = resolve_model("builtin").card
    return round_up(tile + 2 * card.default_halo, card.size_divisor), card.default_halo


def pipeline_batch(device: str = "cpu", tile: int = TILE) -> int:
    """Windows per forward pass that segpipe run's default ``--batch-size`` gives on ``device`` (``auto``: 1 on a
    CPU; on a GPU what its free memory holds, up to the tiles of one chunk)."""
    configured = InferenceConfig().batch_size
    if configured != AUTO:
        return int(configured)
    edge, _ = window_edge(tile)
    per_chunk = (TilingConfig().chunk // tile) ** 2
    return pipeline_predictor(device).batch_size_for(1, edge, per_chunk)


def normalized_image(path: Path) -> np.ndarray:
    """The whole (H, W) image as float32, scaled with segpipe's percentile statistics."""
    pixels = tifffile.imread(path)
    stride = normalize.sample_stride(*pixels.shape)
    stats = normalize.BandStats.from_samples(pixels[None, ::stride, ::stride])
    return normalize.apply(pixels[None], stats)[0]


def windows(image: np.ndarray, edge: int) -> list[np.ndarray]:
    """``ceil(H * W / edge^2)`` non-overlapping ``edge``^2 windows, row by row, from the image mirrored up to a
    multiple of ``edge``."""
    height, width = image.shape
    padded = np.pad(image, ((0, -height % edge), (0, -width % edge)), mode="symmetric")
    count = -(-height * width // (edge * edge))
    origins = [(y, x) for y in range(0, padded.shape[0], edge) for x in range(0, padded.shape[1], edge)]
    return [padded[y : y + edge, x : x + edge] for y, x in origins[:count]]


def forward_seconds(module: torch.nn.Module, batches: list[torch.Tensor], streams: int = 1) -> float:
    """Wall seconds of ``module(batch)`` over all ``batches``, shared among ``streams`` threads (waiting for a
    GPU to finish each)."""
    device = batches[0].device

    def run(share: list[torch.Tensor]) -> None:
        with torch.inference_mode():
            for inputs in share:
                module(inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    started = time.perf_counter()
    if streams == 1:
        run(batches)
    else:
        threads = [threading.Thread(target=run, args=(batches[i::streams],)) for i in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return time.perf_counter() - started


def best_pass(module: torch.nn.Module, batches: list[torch.Tensor], streams: int) -> list[float]:
    """Seconds of each pass over ``batches`` (after one untimed warm-up batch): passes are repeated while they
    add up to less than ``MIN_SECONDS`` (small images), at most ``MAX_PASSES``; the fastest is the floor."""
    forward_seconds(module, batches[:1])
    passes = [forward_seconds(module, batches, streams)]
    while sum(passes) < MIN_SECONDS and len(passes) < MAX_PASSES:
        passes.append(forward_seconds(module, batches, streams))
    return passes


def ways_to_run(device: str) -> dict[str, tuple[int, int]]:
    """How the floor is timed: name -> (streams, torch threads per stream)."""
    cores = os.cpu_count() or 1
    if device != "cpu" or cores == 1:
        return {"one stream": (1, cores)}
    return {"one stream, every core": (1, cores), "one stream per core": (cores, 1)}


def measure(image_path: Path, batch_size: int | None = None, device: str = "cpu") -> dict[str, Any]:
    """The floor of one image on ``device`` (see the module docstring), ``batch_size`` windows per pass (default:
    the pipeline's); the process's torch thread count is restored afterwards."""
    saved = torch.get_num_threads()
    try:
        return _measure(image_path, batch_size or pipeline_batch(device), device)
    finally:
        torch.set_num_threads(saved)


def _batches(tiles: list[np.ndarray], batch_size: int, device: str, channels_last: bool) -> list[torch.Tensor]:
    """The windows as input tensors on ``device``, in the predictor's layout, before any clock starts."""
    stacks = [np.stack(tiles[i : i + batch_size])[:, None] for i in range(0, len(tiles), batch_size)]
    batches = [torch.from_numpy(stack).to(device) for stack in stacks]
    if channels_last:
        batches = [batch.contiguous(memory_format=torch.channels_last) for batch in batches]
    return batches


def pipeline_predictor(device: str) -> Predictor:
    """The built-in model as segpipe run's workers load it: the same loader, device and ``--compile``."""
    return load_predictor(resolve_model("builtin"), device, compile=COMPILE)


def _measure(image_path: Path, batch_size: int, device: str) -> dict[str, Any]:
    predictor = pipeline_predictor(device)
    module = predictor.module
    assert module is not None
    edge, halo = window_edge()
    image = normalized_image(image_path)
    tiles = windows(image, edge)
    batches = _batches(tiles, batch_size, device, predictor.channels_last)
    predictor(np.stack(tiles[:batch_size])[:, None])  # untimed; a compiled model compiles here, as on a worker
    ways: dict[str, list[float]] = {}
    for way, (streams, threads) in ways_to_run(device).items():
        torch.set_num_threads(threads)
        ways[way] = best_pass(module, batches, streams)
    fastest = min(ways, key=lambda way: min(ways[way]))
    seconds = min(ways[fastest])
    pixels = image.size
    floor_seconds = seconds * pixels / (len(tiles) * edge * edge)
    return {
        "size": image.shape[0],
        "device": device,
        "megapixels": pixels / 1e6,
        "window": edge,
        "tile": TILE,
        "halo": halo,
        "windows": len(tiles),
        "batch_size": batch_size,
        "layout": "channels_last" if predictor.channels_last else "contiguous",
        "compile": predictor.compile,
        "compile_seconds": sum(predictor.compile_seconds.values()),
        "fastest_way": fastest,
        "forward_seconds": seconds,
        "passes_seconds": ways,
        "floor_seconds": floor_seconds,
        "megapixels_per_second": pixels / 1e6 / floor_seconds,
        "halo_ceiling": (TILE / edge) ** 2,
    }


def floor_of(ctx: Context, size: int) -> dict[str, Any]:
    """The floor of the session's ``size``^2 sample, measured once per session."""
    key = (NAME, size)
    if key not in ctx.memo:
        ctx.log(f"floor: forward pass over {size}^2")
        ctx.memo[key] = measure(ctx.sample(size)[0], device=ctx.device)
    return dict(ctx.memo[key])


def run(ctx: Context) -> dict[str, Any]:
    """Mpx/s of the bare forward pass at each of the profile's floor sizes."""
    runs = {str(size): floor_of(ctx, size) for size in ctx.profile.floor}
    return {
        "sizes": list(ctx.profile.floor),
        "runs": runs,
        "ratios": {f"Mpx/s {size}^2": entry["megapixels_per_second"] for size, entry in runs.items()},
        "goals": [],
    }
