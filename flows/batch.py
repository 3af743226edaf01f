"""The batch's steps, without Prefect: every image goes ingest -> infer -> finalize -> evaluate on a Dask cluster.

Several images run at once, then the batch is reported and logged to MLflow. ``run_batch`` is the body of the
``segment-batch`` flow (``flows/segment_batch.py``) and, for a run with no Prefect API to report to, the whole run:
``run_plan`` decides which. Its ``Orchestrator`` runs the image steps and the batch's report and MLflow steps; the
in-process one here retries them as the flow's tasks are retried, with no Prefect import and no server (a temporary
Prefect server costs a one-off ``segpipe run`` about 4 s of CPU, more than a small image's pixels).

Masks are committed before anything is logged, so a tracking outage loses no work: the run fails with a
TrackingError, and re-running the same command skips the finished images (their ``done.json`` fingerprint
matches) and only logs. An image that fails (a corrupt tile, a vanished object) fails alone: the others finish
and the batch report names its error.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from segpipe.cluster import ClusterHandle, ClusterSpec, distributed_executor, open_cluster, register_model
from segpipe.errors import SegpipeError
from segpipe.executor import Executor
from segpipe.models import model_payload
from segpipe.stages.evaluate import evaluate_image
from segpipe.stages.finalize import finalize_image
from segpipe.stages.infer import infer_image
from segpipe.stages.ingest import ingest_image
from segpipe.stages.objects import append_objects, count_objects
from segpipe.stages.ownership import finished_meanwhile, hold_outputs, hold_plan
from segpipe.stages.plan import BatchPlan, ImageJob
from segpipe.stages.report import ImageFailure, ImageReport, commit_image, finished_report, image_report
from segpipe.stages.report import write_batch_report as _write_batch_report
from segpipe.stages.results import BatchResult, BatchSummary, RunInfo, append_results, summarize_run, write_batch_json
from segpipe.stages.retry import retrying
from segpipe.stages.settings import CanarySet, RunSettings
from segpipe.storage import public_url
from segpipe.tracking import batch_log, discard_warm_up, tracker_for, warm_up

IMAGES_IN_FLIGHT = 4  # images whose chunks are on the cluster together; each image's tasks are small
REPORT_RETRIES, LOG_RETRIES = 1, 2  # the batch steps' tries after a transient fault, with Prefect or without
PrefectChoice = Literal["auto", "on", "off"]
ingest, infer = retrying(ingest_image, 2), retrying(infer_image, 1)
finalize, evaluate = retrying(finalize_image, 1), retrying(evaluate_image, 2)
count = retrying(count_objects, 1)


def segment_one_image(job: ImageJob, plan: BatchPlan, settings: RunSettings, executor: Executor) -> ImageReport:
    """Every stage of one image, each stage retried on its own.

    Then it writes its preview, metrics.json and, last, done.json (the batch sends only images not finished earlier).
    """
    ingested = ingest(job, plan, executor)
    inferred = infer(job, ingested, plan, settings.inference, executor, settings.evaluation)
    final = finalize(job, plan, ingested.stats, settings.export_tiff, executor)
    counted = count(job, plan, settings.objects, executor) if settings.finds_objects else None
    objects = counted.labels if counted is not None else None
    evaluated = (
        evaluate(job, final.mask, plan, settings.evaluation, executor, objects, inferred.scored) if job.truth else None
    )
    report = image_report(job, ingested, inferred, final, evaluated, counted)
    commit_image(job, report, final.source, ingested.stats, plan.model.card.class_names)
    return report


def log_to_mlflow(
    tracking_uri: str,
    experiment: str,
    plan: BatchPlan,
    params: dict[str, Any],
    summary: BatchSummary,
    reports: list[ImageReport],
    report_files: list[str],
    *,
    orchestrator_ids: tuple[str, str] = ("", ""),
) -> batch_log.LoggedRuns:
    """One parent run for the batch, a nested run per image; the flow run and deployment ids in the lineage."""
    lineage = batch_log.batch_lineage(plan, params, *orchestrator_ids)
    with tracker_for(tracking_uri, experiment) as tracker:
        return batch_log.log_batch(tracker, plan, params, lineage, summary, reports, report_files)


ImageOutcome = Callable[[], "ImageReport | BaseException"]  # waits for one image: its report or its fault


class Orchestrator(Protocol):
    """Who runs the batch's steps: Prefect's task runs, or this process's threads."""

    def run_id(self) -> str:
        """The batch's run id (Prefect's flow run id where there is one)."""
        ...

    def submit_images(
        self, jobs: Sequence[ImageJob], plan: BatchPlan, settings: RunSettings, executor: Executor
    ) -> list[ImageOutcome]:
        """``segment_one_image`` for every job, ``IMAGES_IN_FLIGHT`` at once; one outcome per job, in order."""
        ...

    def write_reports(self, plan: BatchPlan, out: str, reports: list[ImageReport], **kwargs: Any) -> list[str]:
        """``write_batch_report`` with its retries."""
        ...

    def log_batch(self, *args: Any) -> batch_log.LoggedRuns:
        """``log_to_mlflow`` with its retries and the orchestrator's ids."""
        ...


@dataclass
class InProcess:
    """The steps on this process's threads, retried as the flow's tasks are; no Prefect import, no server."""

    pool: ThreadPoolExecutor
    batch_run_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def run_id(self) -> str:
        """A new uuid per batch (there is no flow run)."""
        return self.batch_run_id

    def submit_images(
        self, jobs: Sequence[ImageJob], plan: BatchPlan, settings: RunSettings, executor: Executor
    ) -> list[ImageOutcome]:
        """Each image on one of the pool's threads."""
        futures = [self.pool.submit(segment_one_image, job, plan, settings, executor) for job in jobs]
        return [_waiter(future) for future in futures]

    def write_reports(self, plan: BatchPlan, out: str, reports: list[ImageReport], **kwargs: Any) -> list[str]:
        """``write_batch_report``, tried again once after a transient fault."""
        return retrying(_write_batch_report, REPORT_RETRIES)(plan, out, reports, **kwargs)

    def log_batch(self, *args: Any) -> batch_log.LoggedRuns:
        """``log_to_mlflow``, tried twice more after a tracking outage."""
        return retrying(log_to_mlflow, LOG_RETRIES)(*args)


def _waiter(future: Future[ImageReport]) -> ImageOutcome:
    def outcome() -> ImageReport | BaseException:
        error = future.exception()
        return error if error is not None else future.result()

    return outcome


def run_batch(
    plan: BatchPlan,
    run_settings: RunSettings,
    orchestrator: Orchestrator,
    cluster: str = "local",
    workers: int | None = None,
    tracking_uri: str | None = None,
    experiment: str = "segpipe",
    show_progress: bool = False,
    canary_set: CanarySet | None = None,
) -> BatchResult:
    """Segment the plan's images, report and log the batch; returns its results (also in ``OUT/batch.json``)."""
    if tracking_uri:
        warm_up(tracking_uri, experiment)  # MLflow's import and store open, in a child, while the images compute
    try:
        return _run_batch(
            plan, run_settings, orchestrator, cluster, workers, tracking_uri, experiment, show_progress, canary_set
        )
    finally:
        if tracking_uri:
            discard_warm_up(tracking_uri, experiment)  # the batch failed before it logged


def _run_batch(
    plan: BatchPlan,
    run_settings: RunSettings,
    orchestrator: Orchestrator,
    cluster: str,
    workers: int | None,
    tracking_uri: str | None,
    experiment: str,
    show_progress: bool,
    canary_set: CanarySet | None,
) -> BatchResult:
    run = RunInfo(orchestrator.run_id(), datetime.now(UTC), plan.model)
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
                    outcomes.update(_segment_on(handle, todo, plan, run_settings, show_progress, orchestrator))
                    description = handle.description
    ordered = tuple(outcomes[job.name] for job in plan.jobs)
    out = run_settings.out
    summary = summarize_run(out, plan, run, ordered, time.perf_counter() - started, canary_set)
    reports = [o for o in ordered if isinstance(o, ImageReport)]
    report_files = orchestrator.write_reports(
        plan,
        out,
        [r for r in reports if r.role == "input"],
        config=run_settings.evaluation,
        failures=[o for o in ordered if isinstance(o, ImageFailure)],
        canary=summary.canary.checks if summary.canary is not None else (),
    )
    write_batch_json(out, summary, ordered)
    logged = batch_log.LoggedRuns("", ())
    if tracking_uri:
        params = batch_log.batch_params(plan, run_settings, description, run.run_id)
        logged = orchestrator.log_batch(tracking_uri, experiment, plan, params, summary, reports, report_files)
    tables = {r.name: r.objects_table for r in reports if r.objects_table}
    append_objects(out, run.run_id, run.run_date, tables)
    append_results(out, run, reports, plan.model.card.class_names)  # last: no row for a run that did not finish
    return BatchResult(ordered, summary, public_url(out), logged.batch, logged.images, public_url(tracking_uri or ""))


def _segment_on(
    handle: ClusterHandle,
    jobs: list[ImageJob],
    plan: BatchPlan,
    settings: RunSettings,
    show_progress: bool,
    orchestrator: Orchestrator,
) -> dict[str, ImageReport | ImageFailure]:
    """Every job on the cluster, several images at once (the orchestrator bounds how many)."""
    settings = _with_torch_threads(settings, handle)
    register_model(handle.client, plan.model, model_payload(plan.model))
    executor = distributed_executor(handle.client, show_progress, handle.task_resources, min_slots=handle.workers)
    waits = orchestrator.submit_images(jobs, plan, settings, executor)
    return {job.name: _outcome(job, wait()) for job, wait in zip(jobs, waits, strict=True)}


def _outcome(job: ImageJob, result: ImageReport | BaseException) -> ImageReport | ImageFailure:
    """The image's report, or its failure as one line (the batch goes on)."""
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


def run_plan(plan: BatchPlan, settings: RunSettings, prefect: bool = True, **options: Any) -> BatchResult:
    """A plan already made (its images and truths) run as the ``segment-batch`` flow, or in process.

    Args:
        plan: the batch's plan (it holds a loaded model, which is no flow parameter: it is handed over in process).
        settings: the run's settings.
        prefect: True: as the ``segment-batch`` flow, reported to Prefect's API; False: in this process only.
        options: the flow's other parameters (cluster, workers, tracking_uri, experiment, show_progress, canary).
    """
    if prefect:
        from flows.segment_batch import run_plan_as_flow

        return run_plan_as_flow(plan, settings, **options)
    canary = options.pop("canary", None)
    with hold_plan(plan, settings) as held, ThreadPoolExecutor(IMAGES_IN_FLIGHT, "segpipe-image") as pool:
        canary_set = CanarySet.from_dict(canary) if canary else None
        return run_batch(held, settings, InProcess(pool), canary_set=canary_set, **options)
