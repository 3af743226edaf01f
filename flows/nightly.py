"""The nightly flow: segment only what is new, changed or left unfinished by an earlier run.

It finds tonight's inputs and pairs their truths; the report says, for every image, what was done and why.

Why each image is (or is not) processed is decided by ``segpipe.stages.incremental`` before the batch.
Only new, changed and retry images go to ``segment_batch`` (a subflow); a night with none of them starts no
cluster and logs no MLflow run, and is a success. An input that cannot be planned (truncated, wrong band count)
is ``rejected`` without stopping the others. The report is returned and written to ``<out>/nightly-<date>.json``
(the date the run was scheduled for, UTC); a failed or rejected image makes the flow run end Failed, with the
report as its result, so the scheduler and any automation see it; the image is taken up again the next night.
"""

from __future__ import annotations

import datetime
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.client.schemas.objects import State
from prefect.states import Failed

from flows.segment_batch import RETRY, run_plan_as_flow
from segpipe.stages.incremental import (
    NightlyImage,
    Pair,
    classify,
    nightly_settings,
    nightly_summary,
    outcomes,
    plan_inputs,
)
from segpipe.stages.plan import BatchPlan
from segpipe.stages.report import write_json
from segpipe.stages.settings import RunSettings
from segpipe.storage import location, public_url
from segpipe.storage.listing import expand_inputs, pair_truths

LISTING_THREADS = 8  # commit records read at once (object stores: one request each)
TASK_OPTIONS: dict[str, Any] = {**RETRY, "retries": 2, "retry_delay_seconds": 10}  # transient faults only


@task(name="find-inputs", **TASK_OPTIONS)
def discover(input: str | list[str], out: str, truth_pattern: str | None) -> list[Pair]:
    """Tonight's images (never one inside ``out``) with their truths (None where there is none)."""
    out_prefix = location(out).url.rstrip("/") + "/"
    images = [url for url in expand_inputs(input) if not url.startswith(out_prefix)]
    return pair_truths(images, truth_pattern)


@task(name="plan-night", **TASK_OPTIONS)
def plan_night(
    pairs: list[Pair], settings: dict[str, Any], tracking_uri: str | None
) -> tuple[BatchPlan | None, list[NightlyImage]]:
    """One plan for every input that can be planned, and the rejected inputs.

    Images with and without a truth are planned apart (a plan takes truths for all of its images or for none) and
    merged.
    """
    return plan_inputs(pairs, settings, tracking_uri)


@task(name="classify", **TASK_OPTIONS)
def classify_all(plan: BatchPlan) -> list[NightlyImage]:
    """``classify`` for every job of the plan, a few at a time."""
    with ThreadPoolExecutor(LISTING_THREADS) as pool:
        return list(pool.map(lambda job: classify(job, plan.model.sha256), plan.jobs))


def night_date() -> str:
    """The date (UTC) this run was scheduled for: its night, even when it starts late or is retried."""
    from prefect.runtime import flow_run

    when = flow_run.scheduled_start_time
    if not isinstance(when, datetime.datetime):
        when = datetime.datetime.now(datetime.UTC)
    return when.astimezone(datetime.UTC).date().isoformat()


@flow(name="segment-nightly")
def nightly(
    input: str,
    out: str,
    truth_pattern: str | None = None,
    model: str = "builtin",
    cluster: str = "local",
    workers: int | None = None,
    chunk: int = 1024,
    halo: int | None = None,
    tracking_uri: str | None = None,
    experiment: str = "segpipe-nightly",
    settings: dict[str, Any] | None = None,
) -> dict[str, Any] | State[dict[str, Any]]:
    """Segment the new, changed and unfinished images under ``input``; report why each image was or was not.

    Args:
        input: a glob (``s3://bucket/in/*.tif``, ``/data/in/**/*.ome.tif``), a folder or prefix (the images
            directly inside it) or an image URL.
        out: where outputs go, one folder per image, and ``nightly-<date>.json``.
        truth_pattern: where an image's truth is, e.g. ``{dir}/{stem}_truth.tif``; an image without one is
            segmented without metrics.
        model: ``builtin``, a model file or ``models:/NAME@ALIAS``.
        cluster: ``local``, ``cuda``, ``slurm``, ``kubernetes`` or a scheduler address.
        workers: worker processes, GPUs, jobs or pods (None: the backend's default).
        chunk: Zarr chunk edge.
        halo: ``trim`` halo (None: the model's).
        tracking_uri: MLflow tracking URI (None: no tracking).
        experiment: MLflow experiment.
        settings: other ``RunSettings`` fields (``tiling``, ``inference``, ``evaluation``, ``export_tiff``...).
    """
    values = nightly_settings(out, model, chunk, halo, settings)
    plan, rejected = plan_night(discover(input, out, truth_pattern), values, tracking_uri)
    planned = classify_all(plan) if plan else []
    todo = [job for job, image in zip(plan.jobs if plan else (), planned, strict=True) if image.reason != "unchanged"]
    batch: dict[str, Any] | None = None
    if plan is not None and todo:
        batch = run_plan_as_flow(
            replace(plan, jobs=tuple(todo)),  # the plan carries the truths
            RunSettings.from_dict(values),
            cluster=cluster,
            workers=workers,
            tracking_uri=tracking_uri,
            experiment=experiment,
        ).to_json()
    return _finish(outcomes(planned, batch) + rejected, batch, input, out)


def _finish(
    images: list[NightlyImage], batch: dict[str, Any] | None, input: str, out: str
) -> dict[str, Any] | State[dict[str, Any]]:
    """Write ``<out>/nightly-<date>.json`` and return the report.

    A Failed state carrying the report is returned instead when an image failed or was rejected.
    """
    summary = nightly_summary(images, input, night_date())
    reasons = {image.name: image.reason for image in images}
    report = dict(batch or {"images": [], "batch": None, "failures": [], "mlflow_run_id": "", "out": public_url(out)})
    report["images"] = [{**entry, "reason": reasons.get(entry["name"])} for entry in report["images"]]
    report["nightly"] = summary
    written = write_json(location(out).child(f"nightly-{summary['date']}.json").url, report)
    counts = summary["counts"]
    message = (
        f"{counts['processed']} processed, {counts['skipped']} unchanged, {counts['failed']} failed, "
        f"{counts['rejected']} rejected ({written})"
    )
    get_run_logger().info("segment-nightly: %s", message)
    if counts["failed"] or counts["rejected"]:
        return Failed(message=f"segment-nightly: {message}", data=report)
    return report
