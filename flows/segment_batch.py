"""The batch flow: every image goes ingest -> infer -> finalize -> evaluate on a Dask cluster, several images at
once, then the batch is reported and logged to MLflow.

Prefect sees a task per image and stage, never per chunk: chunks go straight to Dask through the executor.
Masks are committed before anything is logged, so a tracking outage loses no work: the run fails with a
TrackingError, and re-running the same command skips the finished images (their ``done.json`` fingerprint
matches) and only logs. An image that fails (a corrupt tile, a vanished object) fails alone: the others finish
and the batch report names its error.
"""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
import time
import uuid
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

import segpipe
from segpipe.cluster import ClusterHandle, ClusterSpec, distributed_executor, open_cluster, register_model
from segpipe.config import InferenceConfig
from segpipe.errors import SegpipeError, TrackingError
from segpipe.executor import Executor
from segpipe.models import model_payload
from segpipe.stages.evaluate import Evaluated, evaluate_image
from segpipe.stages.finalize import Finalized, finalize_image
from segpipe.stages.infer import Inferred, infer_image
from segpipe.stages.ingest import Ingested, ingest_image
from segpipe.stages.plan import BatchPlan, CanarySet, ImageJob, RunSettings, plan_batch, settings_from_dict
from segpipe.stages.report import (
    ImageFailure,
    ImageReport,
    batch_summary,
    commit_image,
    finished_report,
    image_report,
    write_batch_report,
    write_json,
)
from segpipe.stages.results import RunInfo, append_results, check_canary, read_results, result_rows
from segpipe.storage import location, public_url
from segpipe.tracking import MlflowTracker, Tracker, flatten_scores, warm_up

IMAGES_IN_FLIGHT = 4  # images whose chunks are on the cluster together; each image's tasks are small
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
def ingest(job: ImageJob, plan: BatchPlan, executor: Executor) -> Ingested:
    return ingest_image(job, plan, executor)


@task(name="infer", retries=1, **RETRY)
def infer(job: ImageJob, ingested: Ingested, plan: BatchPlan, config: InferenceConfig, executor: Executor) -> Inferred:
    return infer_image(job, ingested, plan, config, executor)


@task(name="finalize", retries=1, **RETRY)
def finalize(job: ImageJob, plan: BatchPlan, ingested: Ingested, export: bool, executor: Executor) -> Finalized:
    return finalize_image(job, plan, ingested.stats, export, executor)


@task(name="evaluate", retries=2, **RETRY)
def evaluate(job: ImageJob, mask: str, plan: BatchPlan, settings: RunSettings, executor: Executor) -> Evaluated:
    return evaluate_image(job, mask, plan, settings.evaluation, executor)


@task(name="image", **TASK_OPTIONS)
def segment_image(job: ImageJob, plan: BatchPlan, settings: RunSettings, executor: Executor) -> ImageReport:
    """Every stage of one image, then its preview, metrics.json and, last, done.json (the flow sends only images
    not finished earlier)."""
    ingested = ingest(job, plan, executor)
    inferred = infer(job, ingested, plan, settings.inference, executor)
    final = finalize(job, plan, ingested, settings.export_tiff, executor)
    evaluated = evaluate(job, final.mask, plan, settings, executor) if job.truth is not None else None
    report = image_report(job, ingested, inferred, final, evaluated)
    commit_image(job, report, final.source, ingested.stats, plan.model.card.class_names)
    return report


@task(name="report", retries=1, **RETRY)
def write_reports(plan: BatchPlan, settings: RunSettings, reports: list[ImageReport]) -> list[str]:
    return write_batch_report(plan, settings.out, reports, settings.evaluation)


@flow(
    name="segment-batch",
    validate_parameters=False,
    task_runner=ThreadPoolTaskRunner(max_workers=IMAGES_IN_FLIGHT),  # type: ignore[arg-type]
)
def segment_batch(
    images: list[str],
    truths: list[str] | None = None,
    settings: dict[str, Any] | None = None,
    cluster: str = "local",
    workers: int | None = None,
    tracking_uri: str | None = None,
    experiment: str = "segpipe",
    show_progress: bool = False,
    plan: BatchPlan | None = None,
    canary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Segment a batch of images; returns the batch report (also written to ``OUT/batch.json``).

    Args:
        images: TIFF/BigTIFF files or Zarr arrays, as paths or URLs (``s3://...``).
        truths: one label image per input, or None to skip metrics.
        settings: ``RunSettings`` fields as a dict (see ``segpipe.stages.plan.settings_from_dict``).
        cluster: ``local``, ``cuda``, ``slurm``, ``kubernetes`` or a scheduler address (``tcp://HOST:PORT``).
        workers: worker processes (local and cuda: per machine; slurm/kubernetes: jobs or pods).
        tracking_uri: MLflow tracking URI; None disables tracking.
        experiment: MLflow experiment name.
        show_progress: draw progress bars on stderr.
        plan: a plan the caller already made from the same arguments (the CLI plans before Prefect starts).
        canary: a fixed labelled set scored every run, ``{"images": [...], "truths": [...], "tolerance": 0.02,
            "nights": 7}``; its figures are compared with recent runs' in the results table.
    """
    if tracking_uri:
        warm_up(tracking_uri, experiment)  # MLflow's import and store open while the images compute
    run_settings = settings_from_dict(settings or {})
    canary_set = CanarySet.from_dict(canary) if canary else None
    plan = plan or plan_batch(images, truths, run_settings, tracking_uri, canary_set)
    run = RunInfo(_run_id(), datetime.now(UTC), plan.model)
    started = time.perf_counter()
    outcomes: dict[str, ImageReport | ImageFailure] = {}
    for job in plan.jobs:
        earlier = finished_report(job)
        if earlier is not None:
            outcomes[job.name] = earlier
    pending = [job for job in plan.jobs if job.name not in outcomes]
    description = "none started: every image was finished earlier"
    if pending:  # a re-run over finished images starts no cluster at all
        with open_cluster(ClusterSpec.parse(cluster, workers)) as handle:
            outcomes.update(_segment_on(handle, pending, plan, run_settings, show_progress))
            description = handle.description
    ordered = [outcomes[job.name] for job in plan.jobs]
    reports = [o for o in ordered if isinstance(o, ImageReport)]
    inputs = [r for r in reports if r.role == "input"]
    failures = [o for o in ordered if isinstance(o, ImageFailure)]
    class_names = plan.model.card.class_names
    batch = batch_summary(inputs, failures, class_names, time.perf_counter() - started)
    batch["run_id"] = run.run_id
    batch["results_table"] = public_url(append_results(run_settings.out, run, reports, class_names))
    if canary_set is not None:
        batch["canary"] = canary_summary(run_settings.out, run, reports, class_names, canary_set)
    report_files = write_reports(plan, run_settings, inputs)
    entries = [o.to_json() for o in ordered]
    write_json(location(run_settings.out).child("batch.json").url, {**batch, "images": entries})
    run_ids: dict[str, Any] = {"batch": "", "images": {}}
    if tracking_uri:
        params = {**_batch_params(plan, run_settings, description), "run_id": run.run_id}
        run_ids = log_batch(tracking_uri, experiment, plan, params, batch, reports, report_files)
    for entry in entries:
        entry["mlflow_run_id"] = run_ids["images"].get(entry["name"], "")
    return {
        "images": entries,
        "batch": batch,
        "failures": [f.to_json() for f in failures],
        "mlflow_run_id": run_ids["batch"],
        "tracking_uri": public_url(tracking_uri or ""),
        "out": public_url(run_settings.out),
    }


def _segment_on(
    handle: ClusterHandle, jobs: list[ImageJob], plan: BatchPlan, settings: RunSettings, show_progress: bool
) -> dict[str, ImageReport | ImageFailure]:
    """Every job on the cluster, several images at once (the flow's task runner bounds how many)."""
    settings = _with_torch_threads(settings, handle)
    register_model(handle.client, plan.model, model_payload(plan.model))
    executor = distributed_executor(handle.client, show_progress, handle.task_resources, min_slots=handle.workers)
    futures = [
        segment_image.with_options(task_run_name=f"image-{job.name}").submit(job, plan, settings, executor)
        for job in jobs
    ]
    return {job.name: _outcome(job, future) for job, future in zip(jobs, futures, strict=True)}


def _run_id() -> str:
    """The Prefect flow run's id (one id for the run in Prefect, MLflow and the results table), else a new one."""
    from prefect.runtime import flow_run

    return str(flow_run.id or uuid.uuid4())


def canary_summary(
    out: str, run: RunInfo, reports: list[ImageReport], class_names: tuple[str, ...], canary: CanarySet
) -> dict[str, Any]:
    """Tonight's canary figures against recent runs', with an ``alert`` when one moved beyond tolerance."""
    tonight = result_rows(run, [r for r in reports if r.role == "canary"], class_names)
    checks = check_canary(read_results(out), tonight, class_names, canary.tolerance, canary.nights)
    return {
        "alert": any(check.alert for check in checks),
        "checks": [{**asdict(check), "alert": check.alert} for check in checks],
    }


def _outcome(job: ImageJob, future: PrefectFuture[ImageReport]) -> ImageReport | ImageFailure:
    """The image's report, or its failure as one line (the batch goes on)."""
    future.wait()
    result = future.state.result(raise_on_failure=False)
    if isinstance(result, ImageReport):
        return result
    code = result.exit_code if isinstance(result, SegpipeError) else 1
    message = (
        str(result) if isinstance(result, SegpipeError) else f"{job.image.path}: {type(result).__name__}: {result}"
    )
    return ImageFailure(job.name, job.image.path, message.replace("\n", " "), code)


def _with_torch_threads(settings: RunSettings, handle: ClusterHandle) -> RunSettings:
    """On a local cluster, share the cores between worker processes so torch does not oversubscribe them."""
    if settings.inference.torch_threads is not None or handle.kind != "local":
        return settings
    threads = max(1, (os.cpu_count() or 1) // max(1, handle.workers))
    return replace(settings, inference=replace(settings.inference, torch_threads=threads))


@task(name="log-batch", retries=2, **RETRY)
def log_batch(
    tracking_uri: str,
    experiment: str,
    plan: BatchPlan,
    params: dict[str, Any],
    batch: dict[str, Any],
    reports: list[ImageReport],
    report_files: list[str],
) -> dict[str, Any]:
    """One parent run for the batch, a nested run per image; returns the run ids."""
    tracker: Tracker = MlflowTracker(tracking_uri, experiment)
    batch_run = tracker.start_batch(params, lineage_tags(plan, params))
    try:
        with tempfile.TemporaryDirectory(prefix="segpipe-mlflow-") as staging:
            images = {r.name: _log_image(tracker, plan, r, staging) for r in reports}
            tracker.log_metrics(batch_run, _metrics(batch, plan))
            tracker.log_artifact(batch_run, _local(location(params["out"]).child("batch.json").url, staging))
            for url in report_files:
                tracker.log_artifact(batch_run, _local(url, staging), "report")
    except BaseException:
        _end_quietly(tracker, batch_run)
        raise
    tracker.end(batch_run)
    return {"batch": batch_run, "images": images}


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


def _log_image(tracker: Tracker, plan: BatchPlan, report: ImageReport, staging: str) -> str:
    job = next(j for j in plan.jobs if j.name == report.name)
    params = {
        "image": public_url(report.image),
        "truth": public_url(report.truth) if report.truth else "",
        "shape_cyx": report.shape_cyx,
        "dtype": job.image.dtype,
        "resumed_from_done": report.skipped,
    }
    run_id = tracker.start_image(report.name, params)
    tracker.log_metrics(run_id, _metrics(report.to_json(), plan))
    for leaf in ("metrics.json", "preview.png"):
        tracker.log_artifact(run_id, _local(job.path(leaf), staging))
    tracker.end(run_id)
    return run_id


def _end_quietly(tracker: Tracker, run_id: str) -> None:
    try:
        tracker.end(run_id, "FAILED")
    except TrackingError:
        pass


def _batch_params(plan: BatchPlan, settings: RunSettings, cluster: str) -> dict[str, Any]:
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
        "cluster": cluster,
        "images": [public_url(j.image.path) for j in plan.jobs],
        "truths": [public_url(j.truth.path) if j.truth else "" for j in plan.jobs],
        "out": public_url(settings.out),
        "ignore_index": settings.evaluation.ignore_index,
        "truth_instances": settings.evaluation.truth_instances,
    }


def lineage_tags(plan: BatchPlan, params: dict[str, Any]) -> dict[str, str]:
    """Where every input, the model and the code came from, and where the run ran."""
    tags = {
        "segpipe.version": segpipe.__version__,
        "segpipe.git_commit": _git_commit(),
        **{f"segpipe.{key}": value for key, value in plan.model.lineage().items()},
        "segpipe.model_uri": str(params["model_uri"]),
        "segpipe.model_card": str(asdict(plan.model.card)),
        "segpipe.cluster": str(params["cluster"]),
        "segpipe.run_id": str(params["run_id"]),
        "python": platform.python_version(),
        **_prefect_tags(),
    }
    for i, job in enumerate(plan.jobs):
        tags[f"segpipe.input.{i}.url"] = public_url(job.image.path)
        tags[f"segpipe.input.{i}.fingerprint"] = job.done_key
    return tags


def _git_commit() -> str:
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


def _prefect_tags() -> dict[str, str]:
    from prefect.runtime import deployment, flow_run

    return {"prefect.flow_run_id": str(flow_run.id or ""), "prefect.deployment": str(deployment.name or "")}


def _metrics(report: dict[str, Any], plan: BatchPlan) -> dict[str, float]:
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
    for check in (report.get("canary") or {}).get("checks", []):
        values[f"canary_{check['metric']}"] = check["tonight"]
    if "canary" in report:
        values["canary_alert"] = float(report["canary"]["alert"])
    for part, prefix in (("seam_band", "seam_"), ("interior", "interior_")):
        if part in report and report[part]["pixels"]:
            values[f"{prefix}mean_dice"] = report[part]["mean_dice"]
            values[f"{prefix}mean_iou"] = report[part]["mean_iou"]
    return values
