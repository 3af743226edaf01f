"""The nightly flow: find tonight's inputs, pair their truths, and segment only what is new, changed or left
unfinished by an earlier run; the report says, for every image, what was done and why.

Why an image is (or is not) processed, decided before the batch from ``<out>/<name>/done.json`` and the store's
commit, compared with the fingerprints of tonight's plan:

- ``new``: no earlier output for this image.
- ``changed``: an earlier commit under another fingerprint (the input's content, the model or a setting changed);
  its outputs are replaced (the nightly sets ``overwrite``).
- ``unchanged``: committed under tonight's fingerprint; skipped, nothing is computed.
- ``retry``: outputs of an earlier run that never committed (last night's failure, a killed run); resumed.

Only new, changed and retry images go to ``segment_batch`` (a subflow); a night with none of them starts no
cluster and logs no MLflow run, and is a success. An input that cannot be planned (truncated, wrong band count)
is ``rejected`` without stopping the others. The report is returned and written to ``<out>/nightly-<date>.json``
(the date the run was scheduled for, UTC); a failed or rejected image makes the flow run end Failed, with the
report as its result, so the scheduler and any automation see it; the image is taken up again the next night.
"""

from __future__ import annotations

import datetime
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.states import Failed, State

from flows.segment_batch import RETRY, segment_batch
from segpipe.errors import InputError
from segpipe.io.omezarr import read_segpipe_attrs
from segpipe.io.progress import read_commit
from segpipe.stages.plan import BatchPlan, ImageJob, image_name, plan_batch, settings_from_dict
from segpipe.stages.report import write_json
from segpipe.storage import location, public_url
from segpipe.storage.listing import expand_inputs, pair_truths

Pair = tuple[str, str | None]
REASONS = ("new", "changed", "unchanged", "retry")
STATUSES = ("processed", "skipped", "failed", "rejected")
LISTING_THREADS = 8  # commit records read at once (object stores: one request each)
TASK_OPTIONS: dict[str, Any] = {**RETRY, "retries": 2, "retry_delay_seconds": 10}  # transient faults only


@dataclass(frozen=True)
class NightlyImage:
    """One input of the night, why it was (or was not) processed, and what came of it.

    ``reason``: ``new``, ``changed``, ``unchanged`` or ``retry``. ``status``: ``processed``, ``skipped``
    (unchanged), ``failed`` (failed in the batch, nothing committed) or ``rejected`` (could not be planned).
    """

    name: str
    image: str
    truth: str | None
    reason: str
    detail: str
    status: str = "planned"
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "image": public_url(self.image),
            "truth": public_url(self.truth) if self.truth else None,
        }


def nightly_settings(
    out: str, model: str, chunk: int, halo: int | None, settings: dict[str, Any] | None
) -> dict[str, Any]:
    """``RunSettings`` values for the night: ``settings`` (any ``RunSettings`` field) under the explicit parameters,
    which win; ``overwrite`` defaults to true, so a changed input replaces its outputs."""
    values = dict(settings or {})
    tiling = {**(values.get("tiling") or {}), "chunk": chunk}
    if halo is not None:
        tiling["halo"] = halo
    values = {"overwrite": True, **values, "model": model, "out": out, "tiling": tiling}
    settings_from_dict(values)  # unknown keys and bad values fail now, before any listing
    return values


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
    """One plan for every input that can be planned, and the rejected inputs. Images with and without a truth
    are planned apart (a plan takes truths for all of its images or for none) and merged."""
    plans: list[BatchPlan] = []
    rejected: list[NightlyImage] = []
    for group in ([p for p in pairs if p[1] is not None], [p for p in pairs if p[1] is None]):
        if group:
            plan, bad = _plan_group(group, settings, tracking_uri)
            plans += [plan] if plan is not None else []
            rejected += bad
    if not plans:
        return None, rejected
    jobs = sorted((job for plan in plans for job in plan.jobs), key=lambda job: job.name)
    names = [job.name for job in jobs]
    clash = next((name for name in names if names.count(name) > 1), None)
    if clash is not None:
        paths = [job.image.path for job in jobs if job.name == clash]
        raise InputError(f"{paths[0]}: two inputs share the output name {clash!r} ({paths[1]})")
    return replace(plans[0], jobs=tuple(jobs)), rejected


def _plan_group(
    group: list[Pair], settings: dict[str, Any], tracking_uri: str | None
) -> tuple[BatchPlan | None, list[NightlyImage]]:
    """Plan a group in one go; when an input is bad, plan each alone to set the bad ones aside, then the rest."""
    try:
        return _plan(group, settings, tracking_uri), []
    except InputError as exc:
        if len(group) == 1:
            return None, [_rejected(group[0], settings["out"], exc)]
    good: list[Pair] = []
    rejected: list[NightlyImage] = []
    for pair in group:
        try:
            _plan([pair], settings, tracking_uri)
            good.append(pair)
        except InputError as exc:
            rejected.append(_rejected(pair, settings["out"], exc))
    return (_plan(good, settings, tracking_uri) if good else None), rejected


def _plan(group: list[Pair], settings: dict[str, Any], tracking_uri: str | None) -> BatchPlan:
    images = [image for image, _ in group]
    truths = [truth for _, truth in group if truth is not None]
    return plan_batch(
        images, truths if len(truths) == len(images) else None, settings_from_dict(settings), tracking_uri
    )


def _rejected(pair: Pair, out: str, exc: InputError) -> NightlyImage:
    """An input that cannot be planned; its reason is read from its output folder alone (no fingerprint)."""
    name = image_name(pair[0])
    folder = location(out).child(name)
    record = read_commit(folder)
    reason = "changed" if record else "retry" if folder.exists() else "new"
    detail = {"changed": "committed earlier", "retry": "unfinished earlier run", "new": "no earlier output"}[reason]
    return NightlyImage(name, pair[0], pair[1], reason, f"{detail}; cannot be planned now", "rejected", str(exc))


def classify(job: ImageJob, model_sha256: str) -> NightlyImage:
    """Why ``job`` is processed tonight, or not, from its commit record and its store's commit."""
    record = read_commit(location(job.out_dir))
    attrs = read_segpipe_attrs(job.store)
    committed = attrs.get("infer_key")
    truth = job.truth.path if job.truth else None

    def image(reason: str, detail: str) -> NightlyImage:
        return NightlyImage(job.name, job.image.path, truth, reason, detail)

    if record and record.get("fingerprint") == job.done_key and committed == job.infer_key:
        return image("unchanged", "committed under tonight's fingerprint")
    if not record:
        if location(job.out_dir).exists():
            return image("retry", "outputs of an earlier run that never committed")
        return image("new", "no earlier output")
    if committed is None and location(job.store).exists():
        return image("retry", "an earlier rebuild that never committed")
    if committed == job.infer_key:
        return image("changed", "truth or evaluation settings changed")
    if attrs.get("model_sha256") not in (None, model_sha256):
        return image("changed", "model changed")
    return image("changed", "input content or settings changed")


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


def outcomes(planned: list[NightlyImage], batch: dict[str, Any] | None) -> list[NightlyImage]:
    """Each planned image's status from the batch report (unchanged ones were skipped, not sent)."""
    entries = {entry["name"]: entry for entry in (batch or {}).get("images", [])}
    done: list[NightlyImage] = []
    for image in planned:
        entry = entries.get(image.name)
        if image.reason == "unchanged":
            done.append(replace(image, status="skipped"))
        elif entry is None or entry.get("failed"):
            error = entry.get("error") if entry else "not run"
            done.append(replace(image, status="failed", error=error))
        else:
            done.append(replace(image, status="processed"))
    return done


def nightly_summary(images: list[NightlyImage], input: str | list[str], date: str) -> dict[str, Any]:
    """Per image, why and what; counts per reason and per status."""
    counts = Counter(image.reason for image in images) + Counter(image.status for image in images)
    return {
        "date": date,
        "input": [public_url(i) for i in input] if isinstance(input, list) else public_url(input),
        "counts": {key: counts.get(key, 0) for key in (*REASONS, *STATUSES)},
        "images": [image.to_json() for image in sorted(images, key=lambda i: i.name)],
    }


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
        batch = segment_batch(
            images=list(dict.fromkeys(job.image.path for job in todo)),  # the plan carries the truths
            settings=values,
            cluster=cluster,
            workers=workers,
            tracking_uri=tracking_uri,
            experiment=experiment,
            plan=replace(plan, jobs=tuple(todo)),
        )
    return _finish(outcomes(planned, batch) + rejected, batch, input, out)


def _finish(
    images: list[NightlyImage], batch: dict[str, Any] | None, input: str, out: str
) -> dict[str, Any] | State[dict[str, Any]]:
    """Write ``<out>/nightly-<date>.json``; return the report, or a Failed state carrying it when an image failed
    or was rejected."""
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
