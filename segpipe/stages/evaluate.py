"""Evaluate: a confusion matrix per chunk of the mask against the truth, summed in a tree on the cluster; the
seam band along chunk borders scored apart from the interior; object matching for instance truth."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segpipe import metrics
from segpipe.config import EvalConfig
from segpipe.errors import InputError
from segpipe.evaluation import evaluate_split
from segpipe.executor import Executor, local_executor
from segpipe.io.images import open_image
from segpipe.objects import score_objects
from segpipe.stages.plan import BatchPlan, ImageJob

OBJECT_METRICS_MAX_PIXELS = 64 * 2**20


@dataclass(frozen=True)
class Evaluated:
    """The confusion matrix of one image and its scores (``metrics.scores`` plus ``seam_band``/``interior``
    and, for instance truth, ``objects``)."""

    confusion: np.ndarray
    scores: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def evaluate_image(
    job: ImageJob, mask: str, plan: BatchPlan, config: EvalConfig, executor: Executor = local_executor
) -> Evaluated:
    """Confusion matrix and scores of ``mask`` against the job's truth."""
    if job.truth is None:
        raise InputError(f"{job.image.path}: no truth given, nothing to evaluate")
    start = time.perf_counter()
    split = evaluate_split(open_image(mask), job.truth, plan.model.card.num_classes, config, plan.chunk, executor)
    confusion = split.sum(axis=0)
    scores = {
        **metrics.scores(confusion),
        "interior": _brief(metrics.scores(split[0])),
        "seam_band": _brief(metrics.scores(split[1])),
    }
    if config.truth_instances:
        scores["objects"] = object_scores(job, mask)
    return Evaluated(confusion, scores, time.perf_counter() - start)


def object_scores(job: ImageJob, mask: str) -> list[dict[str, Any]] | None:
    """Object-level matching (stardist-style, IoU thresholds 0.5..0.9) of the mask's connected components
    against instance truth. Matching needs whole objects, so it reads both images whole: it is skipped
    (None) above OBJECT_METRICS_MAX_PIXELS."""
    truth = job.truth
    if truth is None or truth.height * truth.width > OBJECT_METRICS_MAX_PIXELS:
        return None
    instances = truth.read(0, truth.height, 0, truth.width)[0]
    predicted = open_image(mask)
    return score_objects(instances, predicted.read(0, predicted.height, 0, predicted.width)[0], foreground=1)


def _brief(scores: dict[str, Any]) -> dict[str, Any]:
    return {key: scores[key] for key in ("iou", "dice", "mean_iou", "mean_dice", "pixels")}
