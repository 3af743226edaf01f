"""The batch flow: for each image, ingest -> infer -> evaluate (on a Dask cluster), then log the batch to MLflow.

Each task body is one call into ``segpipe``. Masks are written before anything is logged, so a tracking outage
loses no work: the run fails with a TrackingError, and re-running the same command skips the finished images
(their ``done.json`` fingerprint matches) and only logs. Chunk writes are idempotent and marked done only once
written, so a retried task, a rescheduled task (dead worker) or a re-run after ``kill -9`` redoes only the
chunks that were not finished.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, replace
from typing import Any

import numpy as np
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

import segpipe
from segpipe import pipeline
from segpipe.cluster import dask_client, default_workers, distributed_executor, torch_threads_per_worker
from segpipe.config import EvalConfig, InferenceConfig, TilingConfig, from_dict
from segpipe.errors import SegpipeError, TrackingError
from segpipe.inference import Executor
from segpipe.io.images import ImageSource
from segpipe.io.progress import read_done, write_done
from segpipe.metrics import batch_aggregates
from segpipe.metrics import scores as compute_scores
from segpipe.normalize import BandStats
from segpipe.objects import sum_object_metrics
from segpipe.pipeline import finite_or_none
from segpipe.tracking import MlflowTracker, Tracker, flatten_scores, public_uri

TASK_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "retry_delay_seconds": 2}


def _retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient faults; never retry a SegpipeError (bad input stays bad) except tracking outages."""
    try:
        state.result()
    except TrackingError:
        return True
    except SegpipeError:
        return False
    except Exception:
        return True
    return False


RETRY = {**TASK_OPTIONS, "retry_condition_fn": _retry_unless_bad_input}


@task(name="ingest", retries=2, **RETRY)
def ingest(job: pipeline.ImageJob, chunk: int, executor: Executor) -> dict[str, Any]:
    return pipeline.ingest_step(job, chunk, executor)


@task(name="infer", retries=1, **RETRY)
def infer(
    job: pipeline.ImageJob,
    tiled: ImageSource,
    stats: BandStats,
    plan: pipeline.BatchPlan,
    settings: pipeline.RunSettings,
    executor: Executor,
) -> dict[str, Any]:
    return pipeline.infer_step(job, tiled, stats, plan, settings.inference, executor)


@task(name="finalize", retries=1, **RETRY)
def finalize(
    job: pipeline.ImageJob,
    plan: pipeline.BatchPlan,
    stats: BandStats,
    settings: pipeline.RunSettings,
    executor: Executor,
) -> dict[str, Any]:
    return pipeline.finalize_step(job, plan, stats, settings.export_tiff, executor)


@task(name="evaluate", retries=2, **RETRY)
def evaluate(
    job: pipeline.ImageJob, mask: str, plan: pipeline.BatchPlan, settings: pipeline.RunSettings, executor: Executor
) -> dict[str, Any]:
    return pipeline.evaluate_step(job, mask, plan, settings.evaluation, executor)


@task(name="report", retries=1, **RETRY)
def write_reports(
    plan: pipeline.BatchPlan, settings: pipeline.RunSettings, reports: list[dict[str, Any]]
) -> dict[str, Any]:
    return pipeline.report_step(settings.out, plan.jobs, reports, plan.model.card.class_names, settings.evaluation)


@task(name="log-batch", retries=2, **RETRY)
def log_batch(
    tracking_uri: str,
    experiment: str,
    artifact_root: str | None,
    plan: pipeline.BatchPlan,
    params: dict[str, Any],
    batch: dict[str, Any],
    reports: list[dict[str, Any]],
) -> dict[str, Any]:
    """One parent run for the batch, a nested run per image; returns the run ids."""
    tracker: Tracker = MlflowTracker(tracking_uri, experiment, artifact_root)
    batch_run = tracker.start_batch(params, _lineage_tags(plan))
    try:
        image_runs = [_log_image(tracker, plan, job, report) for job, report in zip(plan.jobs, reports, strict=True)]
        tracker.log_metrics(batch_run, _metrics(batch, plan))
        tracker.log_artifact(batch_run, os.path.join(params["out"], "batch.json"))
        report_dir = os.path.join(params["out"], "report")
        if os.path.isdir(report_dir):
            tracker.log_artifacts(batch_run, report_dir, "report")
    except BaseException:
        _end_quietly(tracker, batch_run)
        raise
    tracker.end(batch_run)
    return {"batch": batch_run, "images": image_runs}


def _log_image(tracker: Tracker, plan: pipeline.BatchPlan, job: pipeline.ImageJob, report: dict[str, Any]) -> str:
    params = {
        "image": job.image.path,
        "truth": job.truth.path if job.truth else "",
        "shape_cyx": job.image.shape,
        "dtype": job.image.dtype,
        "resumed_from_done": report.get("skipped", False),
    }
    run_id = tracker.start_image(job.name, params)
    tracker.log_metrics(run_id, _metrics(report, plan))
    for leaf in ("metrics.json", "preview.png"):
        tracker.log_artifact(run_id, job.path(leaf))
    tracker.end(run_id)
    return run_id


def _end_quietly(tracker: Tracker, run_id: str) -> None:
    try:
        tracker.end(run_id, "FAILED")
    except TrackingError:
        pass


def process_image(
    job: pipeline.ImageJob, plan: pipeline.BatchPlan, settings: pipeline.RunSettings, executor: Executor
) -> dict[str, Any]:
    """Every stage of one image; writes metrics.json, preview.png and, last, done.json. A finished image
    (done.json with this run's fingerprint) is not recomputed."""
    done = read_done(job.out_dir)
    if done and done.get("fingerprint") == job.done_key and pipeline.finished_store(job):
        return {**done["report"], "skipped": True, "megapixels_computed": 0.0, "megapixels_per_second": None}
    ingested = ingest(job, plan.chunk, executor)
    inferred = infer(job, ingested["source"], ingested["stats"], plan, settings, executor)
    final = finalize(job, plan, ingested["stats"], settings, executor)
    report: dict[str, Any] = {
        "image": job.image.path,
        "truth": job.truth.path if job.truth else None,
        "mask": final["mask"],
        "ome_zarr": final["store"],
        **{key: final[key] for key in ("tiff", "probabilities") if key in final},
        "shape_cyx": list(job.image.shape),
        "megapixels": inferred["megapixels"],
        "megapixels_computed": inferred["pixels"] / 1e6,
        "megapixels_per_second": inferred["megapixels_per_second"],
        "chunks": inferred["chunks"],
        "chunks_computed": inferred["chunks_computed"],
        "seconds": {"ingest": ingested["seconds"], "infer": inferred["seconds"], "finalize": final["seconds"]},
    }
    if job.truth is not None:
        evaluated = evaluate(job, final["mask"], plan, settings, executor)
        report["seconds"]["evaluate"] = evaluated["seconds"]
        report.update(evaluated["scores"])
    pipeline.preview_step(job, final["source"], final["mask"], ingested["stats"], plan.model.card.class_names)
    report = finite_or_none(report)
    pipeline.write_json(job.path("metrics.json"), report)
    write_done(job.out_dir, job.done_key, report)
    return {**report, "skipped": False}


@flow(name="segment-batch")
def segment_batch(
    images: list[str],
    truths: list[str] | None = None,
    settings: dict[str, Any] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    tracking_uri: str | None = None,
    experiment: str = "segpipe",
    artifact_root: str | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Segment a batch of images; returns the batch report (also written to ``OUT/batch.json``).

    Args:
        images: TIFF/BigTIFF files or Zarr arrays.
        truths: one label image per input, or None to skip metrics.
        settings: ``RunSettings`` fields as a dict (see ``settings_from_dict``).
        workers: LocalCluster worker processes (ignored with ``scheduler``).
        scheduler: address of a running Dask scheduler to use instead of a LocalCluster.
        tracking_uri: MLflow tracking URI; None disables tracking.
        experiment: MLflow experiment name.
        artifact_root: where a new experiment stores artifacts (default: the tracking server's choice).
        show_progress: draw progress bars on stderr.
    """
    run_settings = settings_from_dict(settings or {})
    plan = pipeline.plan_batch(images, truths, run_settings)
    n_workers = workers or default_workers()
    run_settings = _with_torch_threads(run_settings, n_workers)
    started = time.perf_counter()
    with dask_client(n_workers, scheduler) as client:
        executor = distributed_executor(client, show_progress)
        reports = [process_image(job, plan, run_settings, executor) for job in plan.jobs]
    batch = _batch_report(reports, plan, time.perf_counter() - started)
    write_reports(plan, run_settings, reports)
    pipeline.write_json(os.path.join(run_settings.out, "batch.json"), {**batch, "images": reports})
    run_ids = {"batch": "", "images": [""] * len(reports)}
    if tracking_uri:
        params = _batch_params(plan, run_settings, n_workers, scheduler)
        run_ids = log_batch(tracking_uri, experiment, artifact_root, plan, params, batch, reports)
    for report, run_id in zip(reports, run_ids["images"], strict=True):
        report["mlflow_run_id"] = run_id
    return {
        "images": reports,
        "batch": batch,
        "mlflow_run_id": run_ids["batch"],
        "tracking_uri": public_uri(tracking_uri or ""),
        "out": run_settings.out,
    }


def settings_from_dict(values: dict[str, Any]) -> pipeline.RunSettings:
    """``RunSettings`` from plain values (Prefect deployments pass parameters as JSON)."""
    return pipeline.RunSettings(
        model=values.get("model", "builtin"),
        out=values.get("out", "segpipe-out"),
        tiling=from_dict(TilingConfig, values.get("tiling", {})),  # unknown keys are refused, not ignored
        inference=from_dict(InferenceConfig, values.get("inference", {})),
        evaluation=_eval_config(values.get("evaluation", {})),
        overwrite=bool(values.get("overwrite", False)),
        export_tiff=bool(values.get("export_tiff", False)),
        save_probabilities=bool(values.get("save_probabilities", False)),
        trust_model_pickle=bool(values.get("trust_model_pickle", False)),
    )


def _eval_config(values: dict[str, Any]) -> EvalConfig:
    """EvalConfig from JSON-like values; ``truth_mapping`` may be ``{"17": 1, ...}`` or ``[[17, 1], ...]``."""
    mapping = values.get("truth_mapping")
    if isinstance(mapping, dict):
        mapping = mapping.items()
    pairs = tuple(sorted((int(i), int(c)) for i, c in mapping)) if mapping is not None else None
    return from_dict(EvalConfig, {**values, "truth_mapping": pairs})


def _with_torch_threads(settings: pipeline.RunSettings, workers: int) -> pipeline.RunSettings:
    if settings.inference.torch_threads is not None:
        return settings
    threads = torch_threads_per_worker(workers)
    return replace(settings, inference=replace(settings.inference, torch_threads=threads))


def _batch_params(
    plan: pipeline.BatchPlan, settings: pipeline.RunSettings, workers: int, scheduler: str | None
) -> dict[str, Any]:
    return {
        "model": plan.model.card.name,
        "model_path": plan.model.path,
        "model_format": plan.model.format,
        "chunk": plan.chunk,
        "tile": plan.tile,
        "halo": plan.halo,
        "stitch": plan.tiling.stitch,
        "overlap": plan.tiling.overlap,
        "pad_mode": plan.tiling.pad_mode,
        "batch_size": settings.inference.batch_size,
        "device": settings.inference.device,
        "torch_threads": settings.inference.torch_threads,
        "workers": workers,
        "scheduler": public_uri(scheduler) if scheduler else "LocalCluster",
        "images": [j.image.path for j in plan.jobs],
        "truths": [j.truth.path if j.truth else "" for j in plan.jobs],
        "out": settings.out,
        "ignore_index": settings.evaluation.ignore_index,
        "truth_instances": settings.evaluation.truth_instances,
    }


def _lineage_tags(plan: pipeline.BatchPlan) -> dict[str, str]:
    tags = {
        "segpipe.version": segpipe.__version__,
        "segpipe.model_sha256": plan.model.sha256,
        "segpipe.model_card": str(asdict(plan.model.card)),
        "python": platform.python_version(),
    }
    for i, job in enumerate(plan.jobs):
        tags[f"segpipe.input.{i}.fingerprint"] = job.done_key
    return tags


def _batch_report(reports: list[dict[str, Any]], plan: pipeline.BatchPlan, seconds: float) -> dict[str, Any]:
    computed = sum(r["megapixels_computed"] for r in reports)
    batch: dict[str, Any] = {
        "images": len(reports),
        "megapixels": sum(r["megapixels"] for r in reports),
        "megapixels_computed": computed,  # only pixels this run pushed through the model
        "seconds": seconds,
        "megapixels_per_second": computed / seconds if computed and seconds else None,
        "images_skipped": sum(bool(r.get("skipped")) for r in reports),
        "class_names": list(plan.model.card.class_names),
    }
    scored = [np.asarray(r["confusion_matrix"], dtype=np.int64) for r in reports if "confusion_matrix" in r]
    if scored:
        batch.update(finite_or_none(compute_scores(np.sum(scored, axis=0))))  # micro: every pixel weighs the same
        per_image = batch_aggregates(scored)["per_image"]  # each image weighs the same
        batch["per_image"] = finite_or_none({k: per_image[k] for k in ("iou", "dice", "mean_iou", "mean_dice")})
    objects = [r["objects"] for r in reports if r.get("objects")]
    if objects:
        batch["objects"] = finite_or_none(sum_object_metrics(objects))
    return batch


def _metrics(report: dict[str, Any], plan: pipeline.BatchPlan) -> dict[str, float]:
    seconds = report["seconds"]  # per stage for an image, a total for the batch
    per_stage = seconds if isinstance(seconds, dict) else {"total": seconds}
    values = {f"seconds_{stage}": value for stage, value in per_stage.items()}
    values["megapixels"] = report["megapixels"]
    values["megapixels_computed"] = report["megapixels_computed"]
    if report["megapixels_per_second"] is not None:  # a run that computed nothing is not ranked on speed
        values["megapixels_per_second"] = report["megapixels_per_second"]
    if "iou" in report:
        values.update(flatten_scores(report, plan.model.card.class_names))
    if "per_image" in report:
        values["per_image_mean_iou"] = report["per_image"]["mean_iou"]
        values["per_image_mean_dice"] = report["per_image"]["mean_dice"]
    for row in report.get("objects") or []:
        if row["threshold"] in (0.5, 0.75, 0.9):
            values[f"object_f1_at_{row['threshold']:.2f}"] = row["f1"]
    for part, prefix in (("seam_band", "seam_"), ("interior", "interior_")):
        if part in report and report[part]["pixels"]:
            values[f"{prefix}mean_dice"] = report[part]["mean_dice"]
            values[f"{prefix}mean_iou"] = report[part]["mean_iou"]
    return values
