"""Evaluate: a confusion matrix per chunk of the mask against the truth, summed in a tree on the cluster.

The seam band along chunk borders is scored apart from the interior; instance truth gets object matching.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from segpipe import metrics
from segpipe.config import EvalConfig
from segpipe.errors import InputError
from segpipe.executor import Executor, local_executor
from segpipe.io.images import open_image
from segpipe.objects import score_objects
from segpipe.scoring import evaluate_split
from segpipe.stages.plan import BatchPlan, ImageJob

OBJECT_METRICS_MAX_PIXELS = 64 * 2**20


@dataclass(frozen=True)
class Evaluation:
    """An image's scores against its truth: the whole image, and the interior and the seam band apart.

    When object matching was asked for (instance truth), it also holds the object metrics per IoU threshold (None where
    the image was too large to match).
    """

    scores: metrics.Scores
    interior: metrics.BandScores
    seam_band: metrics.BandScores
    objects: list[dict[str, Any]] | None = None
    object_matching: bool = False

    def to_json(self) -> dict[str, Any]:
        """The JSON form: the scores' keys, then ``interior``, ``seam_band`` and (if asked for) ``objects``."""
        data = {**self.scores.to_json(), "interior": self.interior.to_json(), "seam_band": self.seam_band.to_json()}
        if self.object_matching:
            data["objects"] = metrics.finite_or_none(self.objects)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evaluation:
        """From ``to_json``'s form."""
        return cls(
            metrics.Scores.from_json(data),
            metrics.BandScores.from_json(data["interior"]),
            metrics.BandScores.from_json(data["seam_band"]),
            data.get("objects"),
            "objects" in data,
        )


@dataclass(frozen=True)
class Evaluated:
    """The evaluate stage's result: the image's evaluation and the seconds it took."""

    evaluation: Evaluation
    seconds: float = 0.0

    @property
    def confusion(self) -> np.ndarray:
        """The whole image's confusion matrix."""
        return self.evaluation.scores.confusion


def evaluate_image(
    job: ImageJob, mask: str, plan: BatchPlan, config: EvalConfig, executor: Executor = local_executor
) -> Evaluated:
    """Confusion matrix and scores of ``mask`` against the job's truth."""
    if job.truth is None:
        raise InputError(f"{job.image.path}: no truth given, nothing to evaluate")
    start = time.perf_counter()
    split = evaluate_split(open_image(mask), job.truth, plan.model.card.num_classes, config, plan.chunk, executor)
    objects = object_scores(job, mask) if config.truth_instances else None
    evaluation = Evaluation(
        metrics.scores(split.sum(axis=0)),
        metrics.scores(split[0]).band(),
        metrics.scores(split[1]).band(),
        objects,
        config.truth_instances,
    )
    return Evaluated(evaluation, time.perf_counter() - start)


def object_scores(job: ImageJob, mask: str) -> list[dict[str, Any]] | None:
    """Object-level matching of the mask's connected components against instance truth.

    Matching is stardist-style, at IoU thresholds 0.5..0.9. It needs whole objects, so it reads both images whole: it is
    skipped (None) above OBJECT_METRICS_MAX_PIXELS.
    """
    truth = job.truth
    if truth is None or truth.height * truth.width > OBJECT_METRICS_MAX_PIXELS:
        return None
    instances = truth.read(0, truth.height, 0, truth.width)[0]
    predicted = open_image(mask)
    return score_objects(instances, predicted.read(0, predicted.height, 0, predicted.width)[0], foreground=1)
