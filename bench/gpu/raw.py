"""The raw batched forward of the built-in model: inputs already on the device, only the forward calls timed."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from segpipe.models import Predictor
from segpipe.models.predictor import PRECISIONS

WARM_UP_PASSES = 2
MIN_PASSES = 3  # per round
ROUNDS = 3
PIXELS_PER_PASS = 4096 * 4096  # batch limit: up to this many pixels per pass, fewer when memory is short


@dataclass(frozen=True)
class RawForward:
    """One (edge, precision) measurement: windows per pass, passes timed, their seconds and megapixels per second."""

    edge: int
    precision: str
    batch: int
    passes: int
    seconds: float
    megapixels_per_second: float
    memory_peak_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the JSON."""
        return asdict(self)


def batch_for(predictor: Predictor, edge: int) -> int:
    """Windows per pass: the predictor's ``auto`` choice (1 on a CPU; on a GPU what half its free memory holds)."""
    return predictor.batch_size_for(1, edge, max(1, PIXELS_PER_PASS // (edge * edge)))


def windows_of(image: np.ndarray, edge: int, count: int) -> np.ndarray:
    """``count`` (1, edge, edge) windows of the normalised (H, W) ``image``, row by row, repeated when it is small."""
    height, width = image.shape
    origins = [(y, x) for y in range(0, height - edge + 1, edge) for x in range(0, width - edge + 1, edge)]
    if not origins:
        raise ValueError(f"image {height}x{width} is smaller than the window {edge}")
    picked = [origins[i % len(origins)] for i in range(count)]
    return np.stack([image[None, y : y + edge, x : x + edge] for y, x in picked]).astype(np.float32)


def _forward(module: torch.nn.Module, batch: torch.Tensor, precision: str) -> torch.Tensor:
    dtype = PRECISIONS[precision]
    with torch.inference_mode(), torch.autocast(batch.device.type, dtype=dtype, enabled=dtype is not None):
        output: torch.Tensor = module(batch)
    return output


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_batch(predictor: Predictor, windows: np.ndarray) -> torch.Tensor:
    """``windows`` on the predictor's device, in its memory layout."""
    tensor = torch.from_numpy(windows).to(predictor.device)
    return tensor.contiguous(memory_format=torch.channels_last) if predictor.channels_last else tensor


def _passes(module: torch.nn.Module, inputs: torch.Tensor, precision: str, min_seconds: float) -> int:
    """Forward passes until ``min_seconds`` have passed (at least MIN_PASSES); how many ran."""
    passes, start = 0, time.perf_counter()
    while passes < MIN_PASSES or time.perf_counter() - start < min_seconds:
        _forward(module, inputs, precision)
        passes += 1
        if inputs.device.type == "cuda" and passes % 8 == 0:
            _synchronize(inputs.device)  # the clock reads a finished queue, not a launched one
    return passes


def measure(
    predictor: Predictor, image: np.ndarray, edge: int, precision: str, min_seconds: float, streams: int = 1
) -> tuple[RawForward, np.ndarray]:
    """Time batched forward passes of ``edge``^2 windows under ``precision``: ROUNDS rounds over ``min_seconds``.

    ``streams`` threads run passes side by side (on a CPU: one per core with one torch thread each, as a local
    cluster runs them). Warm-up passes are excluded; the device is synchronised before the clock starts and after
    each round's last pass; the fastest round counts. Returns the measurement and the first batch's labels
    (argmax), for the precision comparison.
    """
    assert predictor.module is not None
    device, module = predictor.device, predictor.module
    batch = batch_for(predictor, edge)
    inputs = device_batch(predictor, windows_of(image, edge, batch))
    labels = np.zeros(0)
    for _ in range(WARM_UP_PASSES):
        labels = _forward(module, inputs, precision).argmax(1).to(torch.uint8).cpu().numpy()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    best, timed = 0.0, (0, 1.0)
    for _ in range(ROUNDS):  # the fastest round counts: a shared machine only ever slows a round down
        _synchronize(device)
        start = time.perf_counter()
        if streams == 1:
            passes = _passes(module, inputs, precision, min_seconds / ROUNDS)
        else:
            with ThreadPoolExecutor(streams) as pool:
                copies = [inputs.clone() for _ in range(streams)]
                passes = sum(pool.map(lambda x: _passes(module, x, precision, min_seconds / ROUNDS), copies))
        _synchronize(device)
        seconds = time.perf_counter() - start
        if passes / seconds > best:
            best, timed = passes / seconds, (passes, seconds)
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    passes, seconds = timed
    rate = passes * batch * edge * edge / seconds / 1e6
    return RawForward(edge, precision, batch, passes, seconds, rate, peak), labels


def agreement(first: np.ndarray, second: np.ndarray) -> float:
    """The fraction of pixels on which two label arrays of one shape agree."""
    if first.shape != second.shape:
        raise ValueError(f"label shapes differ: {first.shape} and {second.shape}")
    return float(np.count_nonzero(first == second) / first.size)
