"""The batch flow: every image goes ingest -> infer -> finalize -> evaluate on a Dask cluster.

Several images run at once, then the batch is reported and logged to MLflow.

Prefect sees one task per image (its stages run inside it, each retried on its own) and one per batch step,
never one per chunk: chunks go straight to Dask through the executor.
Masks are committed before anything is logged, so a tracking outage loses no work: the run fails with a
TrackingError, and re-running the same command skips the finished images (their ``done.json`` fingerprint
matches) and only logs. An image that fails (a corrupt tile, a vanished object) fails alone: the others finish
and the batch report names its error.

The flow's parameters are plain JSON, validated by Prefect, so a deployment can run it. A caller that planned
already (the CLI, the nightly flow) hands its plan over in process with ``run_plan``: the plan holds a loaded
model, which is no parameter.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import deployment, flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from segpipe.cluster import ClusterHandle, ClusterSpec, distributed_executor, open_cluster, register_model
from segpipe.errors import ConfigError, SegpipeError
from segpipe.executor import Executor
from segpipe.models import model_payload
from segpipe.stages.evaluate import evaluate_image
from segpipe.stages.finalize import finalize_image
from segpipe.stages.infer import infer_image
from segpipe.stages.ingest import ingest_image
from segpipe.stages.objects import append_objects, count_objects
from segpipe.stages.ownership import finished_meanwhile, hold_outputs, hold_plan
from segpipe.stages.plan import BatchPlan, ImageJob, plan_batch
from segpipe.stages.report import ImageFailure, ImageReport, commit_image, finished_report, image_report
from segpipe.stages.report import write_batch_report as _write_batch_report
from segpipe.stages.results import BatchResult, BatchSummary, RunInfo, append_results, summarize_run, write_batch_json
from segpipe.stages.retry import is_transient, retrying
from segpipe.stages.settings import CanarySet, RunSettings
from segpipe.storage import public_url
from segpipe.tracking import MlflowTracker, batch_log, warm_up

IMAGES_IN_FLIGHT = 4  # images whose chunks are on the cluster together; each image's tasks are small
TASK_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "retry_delay_seconds": 2}
_PLANS: dict[str, BatchPlan] = {}  # plans handed over by run_plan, by the plan_id parameter it passes


def _retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient faults; never retry a SegpipeError (bad input stays bad) except tracking outages."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


RETRY = {**TASK_OPTIONS, "retry_condition_fn": _retry_unless_bad_input}
write_reports = task(name="report", retries=1, **RETRY)(_write_batch_report)
ingest, infer = retrying(ingest_image, 2), retrying(infer_image, 1)
finalize, evaluate = retrying(finalize_image, 1), retrying(evaluate_image, 2)
count = retrying(count_objects, 1)


@task(name="image", **TASK_OPTIONS)
def segment_image(job: ImageJob, plan: BatchPlan, settings: RunSettings, executor: Executor) -> ImageReport:
    """Every stage of one image in one task run, each stage retried on its own.

    Then it writes its preview, metrics.json and, last, done.json (the flow sends only images not finished earlier).
    """
    ingested = ingest(job, plan, executor)
    inferred = infer(job, ingested, plan, settings.inference, executor)
    final = finalize(job, plan, ingested.stats, settings.export_tiff, executor)
    counted = count(job, plan, settings.objects, executor) if settings.finds_objects else None
    objects = counted.labels if counted is not None else None
    evaluated = evaluate(job, final.mask, plan, settings.evaluation, executor, objects) if job.truth else None
    report = image_report(job, ingested, inferred, final, evaluated, counted)
    commit_image(job, report, final.source, ingested.stats, plan.model.card.class_names)
    return report


@task(name="log-batch", retries=2, **RETRY)
def log_batch(
    tracking_uri: str,
    experiment: str,
    plan: BatchPlan,
    params: dict[str, Any],
    summary: BatchSummary,
    reports: list[ImageReport],
    report_files: list[str],
) -> batch_log.LoggedRuns:
    """One parent run for the batch, a nested run per image, with the Prefect flow run in the lineage."""
    ids = str(flow_run.id or ""), str(deployment.name or "")
    lineage = batch_log.batch_lineage(plan, params, *ids)
    return batch_log.log_batch(
        MlflowTracker(tracking_uri, experiment), plan, params, lineage, summary, reports, report_files
    )


@flow(name="segment-batch", task_runner=ThreadPoolTaskRunner(max_workers=IMAGES_IN_FLIGHT))  # type: ignore[arg-type]
def segment_batch(
    images: list[str],
    truths: list[str] | None = None,
    settings: dict[str, Any] | None = None,
    cluster: str = "local",
    workers: int | None = None,
    tracking_uri: str | None = None,
    experiment: str = "segpipe",
    show_progress: bool = False,
    canary: dict[str, Any] | None = None,
    plan_id: str | None = None,
) -> BatchResult:
    """Segment a batch of images; returns the batch's results (also written to ``OUT/batch.json``).

    Args:
        images: TIFF/BigTIFF files or Zarr arrays, as paths or URLs (``s3://...``).
        truths: one label image per input, or None to skip metrics.
        settings: ``RunSettings.to_dict()`` values (see ``RunSettings.from_dict``).
        cluster: ``local``, ``cuda``, ``slurm``, ``kubernetes`` or a scheduler address (``tcp://HOST:PORT``).
        workers: worker processes (local and cuda: per machine; slurm/kubernetes: jobs or pods).
        tracking_uri: MLflow tracking URI; None disables tracking.
        experiment: MLflow experiment name.
        show_progress: draw progress bars on stderr.
        canary: a fixed labelled set scored every run, ``CanarySet.to_dict()`` values; its figures are compared
            with recent runs' in the results table.
        plan_id: set by ``run_plan`` only: the plan it made from these arguments, handed over in process.
    """
    if tracking_uri:
        warm_up(tracking_uri, experiment)  # MLflow's import and store open while the images compute
    run_settings = RunSettings.from_dict(settings or {})
    canary_set = CanarySet.from_dict(canary) if canary else None
    plan = _handed(plan_id) if plan_id else plan_batch(images, truths, run_settings, tracking_uri, canary_set)
    run = RunInfo(str(flow_run.id or uuid.uuid4()), datetime.now(UTC), plan.model)
    started = time.perf_counter()
    outcomes: dict[str, ImageReport | ImageFailure] = {}
    for job in plan.jobs:
        earlier = finished_report(job)
        if earlier is not None:
            outcomes[job.name] = earlier
    pending = [job for job in plan.jobs if job.name not in outcomes]
    description = "none started: every image was finished earlier"
    if pending:  # a re-run over finished images starts no cluster at all
        with hold_outputs(pending, run.run_id, run_settings.lease, run_settings.overwrite) as held:
            outcomes.update(finished_meanwhile(held))  # by a run of the same fingerprint this one waited for
            todo = [job for job in held if job.name not in outcomes]
            if todo:
                with open_cluster(ClusterSpec.parse(cluster, workers)) as handle:
                    outcomes.update(_segment_on(handle, todo, plan, run_settings, show_progress))
                    description = handle.description
    ordered = tuple(outcomes[job.name] for job in plan.jobs)
    out = run_settings.out
    summary = summarize_run(out, plan, run, ordered, time.perf_counter() - started, canary_set)
    reports = [o for o in ordered if isinstance(o, ImageReport)]
    report_files = write_reports(
        plan,
        out,
        [r for r in reports if r.role == "input"],
        run_settings.evaluation,
        failures=[o for o in ordered if isinstance(o, ImageFailure)],
        canary=summary.canary.checks if summary.canary is not None else (),
    )
    write_batch_json(out, summary, ordered)
    logged = batch_log.LoggedRuns("", ())
    if tracking_uri:
        params = batch_log.batch_params(plan, run_settings, description, run.run_id)
        logged = log_batch(tracking_uri, experiment, plan, params, summary, reports, report_files)
    tables = {r.name: r.objects_table for r in reports if r.objects_table}
    append_objects(out, run.run_id, run.run_date, tables)
    append_results(out, run, reports, plan.model.card.class_names)  # last: no row for a run that did not finish
    return BatchResult(ordered, summary, public_url(out), logged.batch, logged.images, public_url(tracking_uri or ""))


def run_plan(plan: BatchPlan, settings: RunSettings, **options: Any) -> BatchResult:
    """``segment_batch`` on a plan already made (its images and truths), handed over in process.

    ``options`` are the flow's other parameters (cluster, workers, tracking_uri, experiment, show_progress, canary).
    """
    images = list(dict.fromkeys(job.image.path for job in plan.jobs))  # for the flow run's record
    with hold_plan(plan, settings) as held, _handing(held) as plan_id:
        result: BatchResult = segment_batch(images=images, settings=settings.to_dict(), plan_id=plan_id, **options)
        return result


@contextmanager
def _handing(plan: BatchPlan) -> Iterator[str]:
    plan_id = uuid.uuid4().hex
    _PLANS[plan_id] = plan
    try:
        yield plan_id
    finally:
        _PLANS.pop(plan_id, None)


def _handed(plan_id: str) -> BatchPlan:
    try:
        return _PLANS[plan_id]
    except KeyError:
        raise ConfigError(f"plan_id {plan_id!r}: no plan handed over in this process (leave plan_id unset)") from None


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
