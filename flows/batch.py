"""The batch's steps, without Prefect: every image goes ingest -> infer -> finalize -> evaluate on a Dask cluster.

Several images run at once, then the batch is reported and its MLflow log finished. ``run_batch`` is the body of the
``segment-batch`` flow (``flows/segment_batch.py``) and, for a run with no Prefect API to report to, the whole run:
``run_plan`` decides which. Its ``Orchestrator`` runs the image steps and the batch's report and MLflow steps; the
in-process one here retries them as the flow's tasks are retried, with no Prefect import and no server (a temporary
Prefect server costs a one-off ``segpipe run`` about 4 s of CPU, more than a small image's pixels).

MLflow is logged while the batch runs (``tracking.live_log``): the batch's parent run once the cluster is up, each
image's run once its mask is committed, in the background, never holding the images. A tracking outage loses no
work: the batch's last step logs what is missing and, if the store still does not answer, the run fails with a
TrackingError; re-running the same command skips the finished images (their ``done.json`` fingerprint matches) and
only logs. An image that fails (a corrupt tile, a vanished object) fails alone: the others finish
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
from segpipe.tracking.live_log import LiveBatchLog

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


def start_mlflow_log(
    tracking_uri: str, experiment: str, plan: BatchPlan, params: dict[str, Any], orchestrator_ids: tuple[str, str]
) -> LiveBatchLog:
    """The batch's MLflow log, its parent run started in the background; the flow run and deployment in the lineage."""
    lineage = batch_log.batch_lineage(plan, params, *orchestrator_ids)
    return LiveBatchLog(lambda: tracker_for(tracking_uri, experiment), plan, params, lineage)


def log_to_mlflow(
    log: LiveBatchLog, summary: BatchSummary, reports: list[ImageReport], report_files: list[str]
) -> batch_log.LoggedRuns:
    """The batch's last MLflow step: the image runs not logged yet, the batch's metrics and files, its end."""
    return log.finish(summary, reports, report_files)


ImageOutcome = Callable[[], "ImageReport | BaseException"]  # waits for one image: its report or its fault


class Orchestrator(Protocol):
    """Who runs the batch's steps: Prefect's task runs, or this process's threads."""

    def run_id(self) -> str:
        """The batch's run id (Prefect's flow run id where there is one)."""
        ...

    def lineage_ids(self) -> tuple[str, str]:
        """The flow run's id and the deployment's name, for the MLflow lineage ("" where there are none)."""
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
        """``log_to_mlflow`` with its retries."""
        ...


@dataclass
class InProcess:
    """The steps on this process's threads, retried as the flow's tasks are; no Prefect import, no server."""

    pool: ThreadPoolExecutor
    batch_run_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def run_id(self) -> str:
        """A new uuid per batch (there is no flow run)."""
        return self.batch_run_id

    def lineage_ids(self) -> tuple[str, str]:
        """No flow run, no deployment."""
        return "", ""

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
    mlflow = _MlflowLog(tracking_uri, experiment, plan, run_settings, run.run_id, orchestrator.lineage_ids())
    try:
        spec = ClusterSpec.parse(cluster, workers)  # a bad spec fails before anything starts
        outcomes = _segment_pending(plan, run_settings, orchestrator, spec, show_progress, run, mlflow)
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
        live = mlflow.started("none started: every image was finished earlier")
        logged = orchestrator.log_batch(live, summary, reports, report_files) if live else batch_log.LoggedRuns("", ())
    finally:
        mlflow.close()
    tables = {r.name: r.objects_table for r in reports if r.objects_table}
    append_objects(out, run.run_id, run.run_date, tables)
    append_results(out, run, reports, plan.model.card.class_names)  # last: no row for a run that did not finish
    return BatchResult(ordered, summary, public_url(out), logged.batch, logged.images, public_url(tracking_uri or ""))


@dataclass
class _MlflowLog:
    """The batch's live MLflow log, started once the cluster is named (or at the end when no image needed one)."""

    tracking_uri: str | None
    experiment: str
    plan: BatchPlan
    settings: RunSettings
    run_id: str
    orchestrator_ids: tuple[str, str]
    live: LiveBatchLog | None = None

    def started(self, cluster: str) -> LiveBatchLog | None:
        """The live log (started now, its params naming ``cluster``, if it was not); None without tracking."""
        if self.live is None and self.tracking_uri:
            params = batch_log.batch_params(self.plan, self.settings, cluster, self.run_id)
            self.live = start_mlflow_log(self.tracking_uri, self.experiment, self.plan, params, self.orchestrator_ids)
        return self.live

    def image_done(self, report: ImageReport) -> None:
        """Log a committed image's run now, in the background."""
        if self.live is not None:
            self.live.log_image(report)

    def close(self) -> None:
        if self.live is not None:
            self.live.close()


def _segment_pending(
    plan: BatchPlan,
    settings: RunSettings,
    orchestrator: Orchestrator,
    cluster: ClusterSpec,
    show_progress: bool,
    run: RunInfo,
    mlflow: _MlflowLog,
) -> dict[str, ImageReport | ImageFailure]:
    """Every image's outcome: those finished earlier read back, the others segmented on the cluster."""
    outcomes: dict[str, ImageReport | ImageFailure] = {}
    for job in plan.jobs:
        earlier = finished_report(job)
        if earlier is not None:
            outcomes[job.name] = earlier
    pending = [job for job in plan.jobs if job.name not in outcomes]
    if not pending:  # a re-run over finished images starts no cluster at all
        return outcomes
    with hold_outputs(pending, run.run_id, settings.lease, settings.overwrite) as held:
        outcomes.update(finished_meanwhile(held))  # by a run of the same fingerprint this one waited for
        todo = [job for job in held if job.name not in outcomes]
        if todo:
            with open_cluster(cluster) as handle:
                mlflow.started(handle.description)
                outcomes.update(
                    _segment_on(handle, todo, plan, settings, show_progress, orchestrator, mlflow.image_done)
                )
    return outcomes


def _segment_on(
    handle: ClusterHandle,
    jobs: list[ImageJob],
    plan: BatchPlan,
    settings: RunSettings,
    show_progress: bool,
    orchestrator: Orchestrator,
    image_done: Callable[[ImageReport], None],
) -> dict[str, ImageReport | ImageFailure]:
    """Every job on the cluster, several images at once (the orchestrator bounds how many).

    ``image_done`` gets each image's report as it is collected (in the jobs' order).
    """
    settings = _with_torch_threads(settings, handle)
    register_model(handle.client, plan.model, model_payload(plan.model))
    executor = distributed_executor(handle.client, show_progress, handle.task_resources, min_slots=handle.workers)
    waits = orchestrator.submit_images(jobs, plan, settings, executor)
    outcomes: dict[str, ImageReport | ImageFailure] = {}
    for job, wait in zip(jobs, waits, strict=True):
        outcomes[job.name] = outcome = _outcome(job, wait())
        if isinstance(outcome, ImageReport):
            image_done(outcome)
    return outcomes


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
