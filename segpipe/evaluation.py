"""Streaming evaluation: a confusion matrix per chunk, summed in a tree. The whole mask is never in memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dask
import numpy as np

from segpipe.config import EvalConfig
from segpipe.errors import InputError
from segpipe.inference import Executor, local_executor
from segpipe.io.images import ImageSource
from segpipe.metrics import confusion_matrix
from segpipe.tiling import Region, chunk_grid

FAN_IN = 8


def chunk_confusion(
    prediction: ImageSource, truth: ImageSource, region: Region, num_classes: int, config: EvalConfig
) -> np.ndarray:
    """Confusion matrix of one chunk of ``prediction`` against ``truth``."""
    truth_labels = truth.read(*region)[0]
    if config.truth_instances:
        truth_labels = (truth_labels > 0).astype(np.uint8)
    try:
        return confusion_matrix(truth_labels, prediction.read(*region)[0], num_classes, config.ignore_index)
    except InputError as exc:
        raise InputError(f"{truth.path}: {exc} (at y={region.y0}, x={region.x0})") from None


def _sum(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.sum(parts, axis=0)


def tree_sum(parts: list[Any], fan_in: int = FAN_IN) -> Any:
    """Sum delayed arrays in a tree of ``fan_in``-way additions (no single task sees them all)."""
    add = dask.delayed(_sum, pure=True)
    while len(parts) > 1:
        parts = [add(parts[i : i + fan_in]) for i in range(0, len(parts), fan_in)]
    return parts[0]


def evaluate(
    prediction: ImageSource,
    truth: ImageSource,
    num_classes: int,
    config: EvalConfig,
    chunk: int,
    executor: Executor = local_executor,
) -> np.ndarray:
    """The (K, K) confusion matrix of ``prediction`` against ``truth``, computed chunk by chunk."""
    task = dask.delayed(chunk_confusion, pure=True)
    regions = chunk_grid(prediction.height, prediction.width, chunk)
    parts = [task(prediction, truth, region, num_classes, config) for region in regions]
    (total,) = executor([tree_sum(parts)], "evaluate")
    return np.asarray(total, dtype=np.int64)
