"""The batch flow: for each image, ingest -> infer -> evaluate -> log, on a Dask cluster, tracked in MLflow.

Each task body is one call into ``segpipe.pipeline``; retries cover transient I/O and tracking faults (chunk
writes are idempotent, so a retried task redoes only whole chunks).
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

import segpipe
from segpipe import pipeline
from segpipe.cluster import dask_client, default_workers, distributed_executor, torch_threads_per_worker
from segpipe.inference import Executor
from segpipe.io.images import ImageSource
from segpipe.metrics import scores as compute_scores
from segpipe.normalize import BandStats
from segpipe.tracking import MlflowTracker, NullTracker, Tracker, flatten_scores

TASK_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "retry_delay_seconds": 2}


@task(name="ingest", retries=2, **TASK_OPTIONS)
def ingest(job: pipeline.ImageJob, chunk: int, executor: Executor) -> dict[str, Any]:
    return pipeline.ingest_step(job, chunk, executor)


@task(name="infer", retries=1, **TASK_OPTIONS)
def infer(job: pipeline.ImageJob, tiled: ImageSource, stats: BandStats, plan: pipeline.BatchPlan,
          settings: pipeline.RunSettings, executor: Executor) -> dict[str, Any]:
    return pipeline.infer_step(job, tiled, stats, plan, settings.inference, executor)


@task(name="evaluate", retries=2, **TASK_OPTIONS)
def evaluate(job: pipeline.ImageJob, mask: str, plan: pipeline.BatchPlan, settings: pipeline.RunSettings,
             executor: Executor) -> dict[str, Any]:
    return pipeline.evaluate_step(job, mask, plan, settings.evaluation, executor)


@task(name="log-image", retries=3, **TASK_OPTIONS)
def log_image(tracker: Tracker, job: pipeline.ImageJob, plan: pipeline.BatchPlan, report: dict[str, Any],
              artifacts: list[str]) -> str:
    run_id = tracker.start_image(job.name, {"image": job.image.path, "truth": job.truth.path if job.truth else "",
                                             "shape_cyx": job.image.shape, "dtype": job.image.dtype})
    tracker.log_metrics(run_id, _image_metrics(report, plan))
    for path in artifacts:
        tracker.log_artifact(run_id, path)
    tracker.end(run_id)
    return run_id


def _image_metrics(report: dict[str, Any], plan: pipeline.BatchPlan) -> dict[str, float]:
    values = {f"seconds_{stage}": report["seconds"][stage] for stage in report["seconds"]}
    values["megapixels"] = report["megapixels"]
    values["megapixels_per_second"] = report["megapixels_per_second"]
    if "iou" in report:
        values.update(flatten_scores(report, plan.model.card.class_names))
    return values


def process_image(job: pipeline.ImageJob, plan: pipeline.BatchPlan, settings: pipeline.RunSettings,
                  executor: Executor, tracker: Tracker) -> dict[str, Any]:
    """Run one image through every stage; write its metrics.json and preview.png; log its nested run."""
    ingested = ingest(job, plan.chunk, executor)
    inferred = infer(job, ingested["source"], ingested["stats"], plan, settings, executor)
    seconds = {"ingest": ingested["seconds"], "infer": inferred["seconds"]}
    report: dict[str, Any] = {"image": job.image.path, "truth": job.truth.path if job.truth else None,
                              "mask": inferred["mask"], "shape_cyx": list(job.image.shape),
                              "megapixels": inferred["megapixels"],
                              "megapixels_per_second": inferred["megapixels_per_second"], "seconds": seconds}
    if job.truth is not None:
        evaluated = evaluate(job, inferred["mask"], plan, settings, executor)
        seconds["evaluate"] = evaluated["seconds"]
        report.update(evaluated["scores"])
        report["confusion"] = evaluated["confusion"]
    preview = pipeline.preview_step(job, ingested["source"], inferred["mask"], ingested["stats"])
    metrics_path = pipeline.write_json(job.path("metrics.json"), _public(report))
    report["mlflow_run_id"] = log_image(tracker, job, plan, report, [metrics_path, preview])
    return report


@flow(name="segment-batch", log_prints=True)
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
        settings: ``RunSettings`` fields as a dict (see ``segpipe.pipeline.RunSettings``).
        workers: LocalCluster worker processes (ignored with ``scheduler``).
        scheduler: address of a running Dask scheduler to use instead of a LocalCluster.
        tracking_uri: MLflow tracking URI; None disables tracking.
        experiment: MLflow experiment name.
        artifact_root: where a new experiment stores artifacts (default: the tracking server's choice).
        show_progress: draw progress bars on stderr.
    """
    run_settings = settings_from_dict(settings or {})
    plan = pipeline.plan_batch(images, truths, run_settings)
    tracker: Tracker = (MlflowTracker(tracking_uri, experiment, artifact_root)
                        if tracking_uri else NullTracker())
    n_workers = workers or default_workers()
    run_settings = _with_torch_threads(run_settings, n_workers)
    batch_run = tracker.start_batch(_batch_params(plan, run_settings, n_workers, scheduler), _lineage_tags(plan))
    started = time.perf_counter()
    try:
        with dask_client(n_workers, scheduler) as client:
            executor = distributed_executor(client, show_progress)
            reports = [process_image(job, plan, run_settings, executor, tracker) for job in plan.jobs]
        batch = _batch_report(reports, plan, time.perf_counter() - started)
        tracker.log_metrics(batch_run, _batch_metrics(batch, plan))
        batch_path = pipeline.write_json(f"{run_settings.out}/batch.json", _public({**batch, "images": reports}))
        tracker.log_artifact(batch_run, batch_path)
    except BaseException:
        tracker.end(batch_run, "FAILED")
        raise
    tracker.end(batch_run)
    return _public({"images": reports, "batch": batch, "mlflow_run_id": batch_run,
                    "tracking_uri": tracker.tracking_uri, "out": run_settings.out})


def settings_from_dict(values: dict[str, Any]) -> pipeline.RunSettings:
    from segpipe.config import EvalConfig, InferenceConfig, TilingConfig

    return pipeline.RunSettings(
        model=values.get("model", "builtin"),
        out=values.get("out", "segpipe-out"),
        tiling=TilingConfig(**values.get("tiling", {})),
        inference=InferenceConfig(**values.get("inference", {})),
        evaluation=EvalConfig(**values.get("evaluation", {})),
    )


def _with_torch_threads(settings: pipeline.RunSettings, workers: int) -> pipeline.RunSettings:
    from dataclasses import replace

    if settings.inference.torch_threads is not None:
        return settings
    threads = torch_threads_per_worker(workers)
    return replace(settings, inference=replace(settings.inference, torch_threads=threads))


def _batch_params(plan: pipeline.BatchPlan, settings: pipeline.RunSettings, workers: int,
                  scheduler: str | None) -> dict[str, Any]:
    return {"model": plan.model.card.name, "model_path": plan.model.path, "model_format": plan.model.format,
            "chunk": plan.chunk, "tile": plan.tile, "halo": plan.halo,
            "batch_size": settings.inference.batch_size, "device": settings.inference.device,
            "torch_threads": settings.inference.torch_threads, "workers": workers,
            "scheduler": scheduler or "LocalCluster", "images": [j.image.path for j in plan.jobs],
            "truths": [j.truth.path if j.truth else "" for j in plan.jobs], "out": settings.out,
            "ignore_index": settings.evaluation.ignore_index,
            "truth_instances": settings.evaluation.truth_instances}


def _lineage_tags(plan: pipeline.BatchPlan) -> dict[str, str]:
    return {"segpipe.version": segpipe.__version__, "segpipe.model_sha256": plan.model.sha256,
            "segpipe.model_card": str(asdict(plan.model.card)), "python": platform.python_version()}


def _batch_report(reports: list[dict[str, Any]], plan: pipeline.BatchPlan, seconds: float) -> dict[str, Any]:
    megapixels = sum(r["megapixels"] for r in reports)
    batch: dict[str, Any] = {"images": len(reports), "megapixels": megapixels, "seconds": seconds,
                             "megapixels_per_second": megapixels / seconds if seconds else 0.0,
                             "class_names": list(plan.model.card.class_names)}
    scored = [r["confusion"] for r in reports if "confusion" in r]
    if scored:
        batch.update(compute_scores(sum(scored[1:], scored[0])))
    return batch


def _batch_metrics(batch: dict[str, Any], plan: pipeline.BatchPlan) -> dict[str, float]:
    values = {"megapixels": batch["megapixels"], "seconds_total": batch["seconds"],
              "megapixels_per_second": batch["megapixels_per_second"]}
    if "iou" in batch:
        values.update(flatten_scores(batch, plan.model.card.class_names))
    return values


def _public(report: Any) -> Any:
    """JSON-ready copy: numpy arrays dropped (their lists are in the scores), NaN -> None."""
    if isinstance(report, dict):
        return {k: _public(v) for k, v in report.items() if k != "confusion"}
    if isinstance(report, list):
        return [_public(v) for v in report]
    return pipeline.finite_or_none(report)
