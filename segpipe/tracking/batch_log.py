"""A batch's MLflow runs: one parent run for the batch and a nested run per image.

The parent run has the batch's params, lineage tags, metrics, ``batch.json`` and the report files; each image's nested
run has its metrics, ``metrics.json`` and ``preview.png``. Metrics are flattened from the typed results here, and only
here; ``live_log.LiveBatchLog`` logs them while the batch runs.
"""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import segpipe
from segpipe.errors import TrackingError
from segpipe.metrics import Scores
from segpipe.stages.plan import BatchPlan
from segpipe.stages.report import ImageReport
from segpipe.stages.results import BatchSummary
from segpipe.stages.settings import RunSettings
from segpipe.storage import location, public_url
from segpipe.tracking.lineage import InputLineage, Lineage
from segpipe.tracking.mlflow import ImageRun, Tracker

OBJECT_THRESHOLDS = (0.5, 0.75, 0.9)  # object F1 logged at these IoU thresholds


@dataclass(frozen=True)
class LoggedRuns:
    """The MLflow run ids of a logged batch: the parent run, and each image's run by name."""

    batch: str
    images: tuple[tuple[str, str], ...]


def batch_params(plan: BatchPlan, settings: RunSettings, cluster: str, run_id: str) -> dict[str, Any]:
    """The parent run's params: the model, the tiling and inference settings, the inputs and the output."""
    return {
        "model": plan.model.card.name,
        **plan.model.lineage(),
        "model_uri": public_url(plan.model.uri),
        "chunk": plan.chunk,
        "tile": plan.tile,
        "halo": plan.halo,
        "stitch": plan.tiling.stitch,
        "overlap": plan.tiling.overlap,
        "pad_mode": plan.tiling.pad_mode,
        "batch_size": settings.inference.batch_size,
        "device": settings.inference.device,
        "precision": settings.inference.precision,
        "torch_threads": settings.inference.torch_threads,
        "compile": settings.inference.compile,
        "cluster": cluster,
        "images": [public_url(j.image.path) for j in plan.jobs],
        "truths": [public_url(j.truth.path) if j.truth else "" for j in plan.jobs],
        "out": public_url(settings.out),
        "ignore_index": settings.evaluation.ignore_index,
        "truth_instances": settings.evaluation.truth_instances,
        "run_id": run_id,
    }


def batch_lineage(plan: BatchPlan, params: dict[str, Any], flow_run_id: str = "", deployment: str = "") -> Lineage:
    """Where every input, the model and the code came from, and where the run ran.

    ``flow_run_id`` and ``deployment`` are the orchestrator's, if any.
    """
    model = {k: v for k, v in plan.model.lineage().items() if k != "model_uri"}
    return Lineage(
        segpipe_version=segpipe.__version__,
        git_commit=git_commit(),
        model_uri=str(params["model_uri"]),
        model_card=str(asdict(plan.model.card)),
        model=tuple(model.items()),
        cluster=str(params["cluster"]),
        run_id=str(params["run_id"]),
        python=platform.python_version(),
        prefect_flow_run_id=flow_run_id,
        prefect_deployment=deployment,
        inputs=tuple(InputLineage(i, public_url(j.image.path), j.done_key) for i, j in enumerate(plan.jobs)),
    )


def git_commit() -> str:
    """The commit of the segpipe checkout this runs from, or '' when it is not one."""
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=os.path.dirname(segpipe.__file__),
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return found.stdout.strip() if found.returncode == 0 else ""


def run_metrics(batch: BatchSummary, reports: list[ImageReport], class_names: tuple[str, ...]) -> dict[str, float]:
    """The parent run's metrics: the batch's, and the object counts summed over its images."""
    return {**batch_metrics(batch, class_names), **object_totals(reports, class_names)}


def log_batch_files(tracker: Tracker, batch_run: str, out: str, report_files: Sequence[str], staging: str) -> None:
    """``OUT/batch.json`` and the report files, as the parent run's artifacts (remote ones copied to ``staging``)."""
    tracker.log_artifact(batch_run, _local(location(out).child("batch.json").url, staging))
    for url in report_files:
        tracker.log_artifact(batch_run, _local(url, staging), "report")


def image_run(plan: BatchPlan, report: ImageReport, staging: str) -> ImageRun:
    """An image's run: its params, metrics, ``metrics.json`` and ``preview.png``."""
    job = next(j for j in plan.jobs if j.name == report.name)
    params = {
        "image": public_url(report.image),
        "truth": public_url(report.truth) if report.truth else "",
        "shape_cyx": report.shape_cyx,
        "dtype": job.image.dtype,
        "resumed_from_done": report.skipped,
    }
    metrics = image_metrics(report, plan.model.card.class_names)
    files = tuple(_local(job.path(leaf), staging) for leaf in ("metrics.json", "preview.png"))
    return ImageRun(report.name, params, metrics, files)


def _local(url: str, staging: str) -> str:
    """A local path holding the bytes of ``url`` (the file itself when it is local)."""
    found = location(url)
    if found.is_local:
        return found.path
    folder = tempfile.mkdtemp(dir=staging)
    path = os.path.join(folder, url.rstrip("/").rsplit("/", 1)[-1])
    with open(path, "wb") as handle:
        handle.write(found.read_bytes())
    return path


def end_quietly(tracker: Tracker, run_id: str) -> None:
    """End ``run_id`` FAILED, if the store answers (the fault that brought us here is the one to report)."""
    try:
        tracker.end(run_id, "FAILED")
    except TrackingError:
        pass


def image_metrics(report: ImageReport, class_names: tuple[str, ...]) -> dict[str, float]:
    """An image run's metrics: seconds per stage, pixels, throughput and, with a truth, its scores."""
    values = {f"seconds_{stage}": value for stage, value in report.seconds.items()}
    values.update(_throughput(report.megapixels, report.megapixels_computed, report.megapixels_per_second))
    if report.foreground_fraction is not None:
        values["foreground_fraction"] = report.foreground_fraction
    for name in ("mean_uncertainty", "uncertain_fraction"):  # with --save-uncertainty
        value = getattr(report, name)
        if value is not None:
            values[name] = float(value)
    values.update(object_totals([report], class_names))
    evaluation = report.evaluation
    if evaluation is None:
        return values
    values.update(flatten_scores(evaluation.scores, class_names))
    values.update(_object_f1(evaluation.objects))
    if evaluation.background_pixels_excluded is not None:  # with --foreground: the pixels left out of the scores
        values["background_pixels_excluded"] = float(evaluation.background_pixels_excluded)
    for part, prefix in ((evaluation.seam_band, "seam_"), (evaluation.interior, "interior_")):
        if part.pixels:
            values[f"{prefix}mean_dice"] = part.mean_dice
            values[f"{prefix}mean_iou"] = part.mean_iou
    return values


def object_totals(reports: list[ImageReport], class_names: tuple[str, ...]) -> dict[str, float]:
    """``objects_<class>`` summed over the reports that found objects; for one report also ``median_area_<class>``."""
    found = [r for r in reports if r.object_counts]
    values: dict[str, float] = {}
    for k, name in enumerate(class_names[1:], start=1):
        if found:
            values[f"objects_{name}"] = float(sum(r.object_counts[k] for r in found))
        median = found[0].median_areas[k] if len(found) == 1 and len(reports) == 1 else None
        if median is not None:
            values[f"median_area_{name}"] = float(median)
    return values


def batch_metrics(batch: BatchSummary, class_names: tuple[str, ...]) -> dict[str, float]:
    """The parent run's metrics: total seconds, pixels, throughput, micro and per-image scores, the canary."""
    values = {"seconds_total": batch.seconds}
    values.update(_throughput(batch.megapixels, batch.megapixels_computed, batch.megapixels_per_second))
    if batch.scores is not None:
        values.update(flatten_scores(batch.scores.aggregates.micro, class_names))
        values["per_image_mean_iou"] = batch.scores.aggregates.per_image.mean_iou
        values["per_image_mean_dice"] = batch.scores.aggregates.per_image.mean_dice
        values.update(_object_f1(batch.scores.objects))
    if batch.canary is not None:
        values.update({f"canary_{check.metric}": check.tonight for check in batch.canary.checks})
        values["canary_alert"] = float(batch.canary.alert)
    return values


def _throughput(megapixels: float, computed: float, rate: float | None) -> dict[str, float]:
    values = {"megapixels": megapixels, "megapixels_computed": computed}
    if rate is not None:  # a run that computed nothing is not ranked on speed
        values["megapixels_per_second"] = rate
    return values


def _object_f1(objects: list[dict[str, Any]] | None) -> dict[str, float]:
    return {
        f"object_f1_at_{row['threshold']:.2f}": row["f1"]
        for row in objects or []
        if row["threshold"] in OBJECT_THRESHOLDS
    }


def flatten_scores(scores: Scores, class_names: tuple[str, ...], prefix: str = "") -> dict[str, float]:
    """``{iou_nucleus: .., dice_nucleus: .., mean_iou: ..}`` from scores, for logging."""
    flat: dict[str, float] = {}
    for metric in ("iou", "dice"):
        for name, value in zip(class_names, getattr(scores, metric), strict=True):
            flat[f"{prefix}{metric}_{name}"] = value
    for key in ("mean_iou", "mean_dice", "pixel_accuracy"):
        flat[f"{prefix}{key}"] = getattr(scores, key)
    return flat
