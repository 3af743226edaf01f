"""Evaluate: a confusion matrix per chunk of the mask against the truth, summed in a tree on the cluster.

The seam band along chunk borders is scored apart from the interior; instance truth gets object matching. Instance
truth is foreground (any id > 0), so for a model with a boundary class (a card's ``instances`` rule) the
predicted boundary counts as the interior class: the pixel scores rate the foreground the objects are made of.
With ``--foreground``, only foreground pixels are scored; the others are counted in ``background_pixels_excluded``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from dask.delayed import delayed

from segpipe import metrics
from segpipe.config import EvalConfig
from segpipe.errors import InputError
from segpipe.executor import Executor, local_executor
from segpipe.io.images import ImageSource, open_image
from segpipe.objects import metrics_from_overlap
from segpipe.objects.grow import InstanceRule
from segpipe.objects.overlap import OverlapCounts, merge_counts, overlap_counts, to_overlap
from segpipe.scoring import ForegroundGrid, ScoredChunks, evaluate_split
from segpipe.stages.plan import BatchPlan, ImageJob
from segpipe.storage import OWN_FORMAT, create_array, open_array
from segpipe.tiling import Region, chunk_grid


@dataclass(frozen=True)
class Evaluation:
    """An image's scores against its truth: the whole image, the interior and the seam band apart.

    With instance truth, also the object metrics per IoU threshold.
    """

    scores: metrics.Scores
    interior: metrics.BandScores
    seam_band: metrics.BandScores
    objects: list[dict[str, Any]] | None = None
    object_matching: bool = False
    background_pixels_excluded: int | None = None  # with --foreground: pixels outside it, not scored

    def to_json(self) -> dict[str, Any]:
        """The JSON form: the scores' keys, then ``interior``, ``seam_band`` and (if asked for) ``objects``.

        With a foreground, ``background_pixels_excluded`` too.
        """
        data = {**self.scores.to_json(), "interior": self.interior.to_json(), "seam_band": self.seam_band.to_json()}
        if self.object_matching:
            data["objects"] = metrics.finite_or_none(self.objects)
        if self.background_pixels_excluded is not None:
            data["background_pixels_excluded"] = self.background_pixels_excluded
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
            data.get("background_pixels_excluded"),
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
    job: ImageJob,
    mask: str,
    plan: BatchPlan,
    config: EvalConfig,
    executor: Executor = local_executor,
    objects: str | None = None,
    scored: ScoredChunks | None = None,
) -> Evaluated:
    """Confusion matrix and scores of ``mask`` against the job's truth.

    With instance truth, ``objects`` (the id image of the objects stage) is matched against it too. ``scored``: the
    chunks the infer tasks scored as they wrote them (``Inferred.scored``), which are not read again.
    """
    if job.truth is None:
        raise InputError(f"{job.image.path}: no truth given, nothing to evaluate")
    start = time.perf_counter()
    truth = truth_on_grid(job, plan.chunk, executor)
    card = plan.model.card
    fold = boundary_fold(plan, config)
    prediction, foreground = open_image(mask), foreground_grid(job)
    if foreground is not None or truth is not job.truth:
        scored = None  # scored in the infer tasks only without a foreground and with the truth as it is
    split = evaluate_split(
        prediction,
        truth,
        card.num_classes,
        config,
        plan.chunk,
        executor,
        fold=fold,
        foreground=foreground,
        scored=scored,
    )
    matched = None
    if config.truth_instances:
        if objects is None:
            raise InputError(f"{job.truth.path}: instance truth is matched against objects, and none were found")
        matched = object_scores(truth, objects, plan.chunk, executor)
    evaluation = Evaluation(
        metrics.scores(split.sum(axis=0)),
        metrics.scores(split[0]).band(),
        metrics.scores(split[1]).band(),
        matched,
        config.truth_instances,
        None if foreground is None else foreground.background_pixels(prediction.height, prediction.width),
    )
    return Evaluated(evaluation, time.perf_counter() - start)


def boundary_fold(plan: BatchPlan, config: EvalConfig) -> InstanceRule | None:
    """The card's instances rule where instance truth is scored as foreground, else None.

    Under the rule, predicted boundary pixels count as the interior class (the truth has no boundary).
    """
    return plan.model.card.instances if config.truth_instances and config.truth_mapping is None else None


def foreground_grid(job: ImageJob) -> ForegroundGrid | None:
    """The job's ``--foreground`` on the mask's grid, or None when every pixel counts."""
    view = job.view
    if view.foreground_mask is None:
        return None
    ratio = (view.scale[0] / view.foreground_scale[0], view.scale[1] / view.foreground_scale[1])
    return ForegroundGrid(view.foreground_mask, ratio)


def truth_on_grid(job: ImageJob, chunk: int, executor: Executor = local_executor) -> ImageSource:
    """The job's truth on the mask's grid: as it is when it has the mask's size, else sampled to it.

    A truth of the input's level-0 size, for a mask computed at another resolution, is taken at the nearest
    pixel to each mask pixel's centre (labels are never averaged) and written to ``truth_on_grid.zarr`` in the
    image's output folder.
    """
    assert job.truth is not None
    _, rows, cols = job.grid
    if (job.truth.height, job.truth.width) == (rows, cols):
        return job.truth
    url = job.path("truth_on_grid.zarr")
    create_array(
        url,
        shape=(rows, cols),
        chunks=(min(chunk, rows), min(chunk, cols)),
        dtype=job.truth.dtype,
        fill_value=0,
        overwrite=True,
        dimension_names=("y", "x"),
    )
    task = delayed(_nearest_chunk, pure=False)
    executor([task(job.truth, url, r, job.view.scale) for r in chunk_grid(rows, cols, chunk)], "evaluate")
    return ImageSource(url, "zarr", "YX", (1, rows, cols), job.truth.dtype, zarr_format=OWN_FORMAT)


def _nearest_chunk(truth: ImageSource, url: str, region: Region, scale: tuple[float, float]) -> None:
    """Write grid ``region`` of the truth: the truth pixel nearest each grid pixel's centre."""
    ys = np.minimum(((np.arange(region.y0, region.y1) + 0.5) * scale[0]).astype(np.int64), truth.height - 1)
    xs = np.minimum(((np.arange(region.x0, region.x1) + 0.5) * scale[1]).astype(np.int64), truth.width - 1)
    data = truth.read(int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1)[0]
    picked = data[np.ix_(ys - ys[0], xs - xs[0])]
    open_array(url, mode="r+", zarr_format=OWN_FORMAT)[region.y0 : region.y1, region.x0 : region.x1] = picked


def object_scores(truth: ImageSource, objects: str, chunk: int, executor: Executor) -> list[dict[str, Any]]:
    """Object matching (stardist-style, IoU thresholds 0.5..0.9) of the predicted objects against instance truth.

    The (true id, predicted id) overlap counts are additive over chunks, so the result is exact at any size.
    """
    task = delayed(_overlap, pure=False)
    parts = executor([task(truth, objects, r) for r in chunk_grid(truth.height, truth.width, chunk)], "evaluate")
    return metrics_from_overlap(to_overlap(merge_counts(parts)))


def _overlap(truth: ImageSource, objects: str, region: Region) -> OverlapCounts:
    predicted = open_array(objects, mode="r", zarr_format=OWN_FORMAT)
    ids = np.asarray(predicted[region.y0 : region.y1, region.x0 : region.x1])
    return overlap_counts(truth.read(*region)[0], ids)
