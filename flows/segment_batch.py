"""The ``segment-batch`` flow: ``flows/batch.py``'s steps as Prefect task runs, for a deployment or a Prefect API.

Prefect sees one task per image (its stages run inside it, each retried on its own) and one per batch step,
never one per chunk: chunks go straight to Dask through the executor.

The flow's parameters are plain JSON, validated by Prefect, so a deployment can run it. A caller that planned
already (the CLI, the nightly flow) hands its plan over in process with ``run_plan_as_flow``: the plan holds a loaded
model, which is no parameter.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import deployment, flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from flows.batch import (
    IMAGES_IN_FLIGHT,
    LOG_RETRIES,
    REPORT_RETRIES,
    ImageOutcome,
    log_to_mlflow,
    run_batch,
    segment_one_image,
)
from segpipe.errors import ConfigError
from segpipe.executor import Executor
from segpipe.stages.ownership import hold_plan
from segpipe.stages.plan import BatchPlan, ImageJob, plan_batch
from segpipe.stages.report import ImageReport
from segpipe.stages.report import write_batch_report as _write_batch_report
from segpipe.stages.results import BatchResult
from segpipe.stages.retry import is_transient
from segpipe.stages.settings import CanarySet, RunSettings
from segpipe.tracking import batch_log

TASK_OPTIONS: dict[str, Any] = {"cache_policy": NO_CACHE, "retry_delay_seconds": 2}
_PLANS: dict[str, BatchPlan] = {}  # plans handed over by run_plan_as_flow, by the plan_id parameter it passes


def _retry_unless_bad_input(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient faults; never retry a SegpipeError (bad input stays bad) except tracking outages."""
    try:
        state.result()
    except Exception as exc:
        return is_transient(exc)
    return False


RETRY = {**TASK_OPTIONS, "retry_condition_fn": _retry_unless_bad_input}
write_reports = task(name="report", retries=REPORT_RETRIES, **RETRY)(_write_batch_report)
segment_image = task(name="image", **TASK_OPTIONS)(segment_one_image)


log_batch = task(name="log-batch", retries=LOG_RETRIES, **RETRY)(log_to_mlflow)


class PrefectTasks:
    """The batch's steps as task runs of the current flow run."""

    def run_id(self) -> str:
        """The flow run's id."""
        return str(flow_run.id or uuid.uuid4())

    def lineage_ids(self) -> tuple[str, str]:
        """The flow run's id and its deployment's name (none for a flow run without one)."""
        return str(flow_run.id or ""), str(deployment.name or "")

    def submit_images(
        self, jobs: Sequence[ImageJob], plan: BatchPlan, settings: RunSettings, executor: Executor
    ) -> list[ImageOutcome]:
        """One ``image`` task run per job on the flow's task runner."""
        futures = [
            segment_image.with_options(task_run_name=f"image-{job.name}").submit(job, plan, settings, executor)
            for job in jobs
        ]
        return [_waiter(future) for future in futures]

    def write_reports(self, plan: BatchPlan, out: str, reports: list[ImageReport], **kwargs: Any) -> list[str]:
        """The ``report`` task."""
        written: list[str] = write_reports(plan, out, reports, **kwargs)
        return written

    def log_batch(self, *args: Any) -> batch_log.LoggedRuns:
        """The ``log-batch`` task."""
        logged: batch_log.LoggedRuns = log_batch(*args)
        return logged


def _waiter(future: PrefectFuture[ImageReport]) -> ImageOutcome:
    def outcome() -> ImageReport | BaseException:
        future.wait()
        result: ImageReport | BaseException = future.state.result(raise_on_failure=False)
        return result

    return outcome


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
        plan_id: set by ``run_plan_as_flow`` only: the plan it made from these arguments, handed over in process.
    """
    run_settings = RunSettings.from_dict(settings or {})
    canary_set = CanarySet.from_dict(canary) if canary else None
    plan = _handed(plan_id) if plan_id else plan_batch(images, truths, run_settings, tracking_uri, canary_set)
    return run_batch(
        plan, run_settings, PrefectTasks(), cluster, workers, tracking_uri, experiment, show_progress, canary_set
    )


def run_plan_as_flow(plan: BatchPlan, settings: RunSettings, **options: Any) -> BatchResult:
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
