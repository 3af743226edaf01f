"""Incremental runs: which of tonight's inputs need work, and why, decided before the batch.

It is decided from each image's ``done.json`` and its store's commit compared with the fingerprints of tonight's plan
(no Prefect here; the nightly flow in ``flows/nightly.py`` wraps these in tasks).

- ``new``: no earlier output for this image.
- ``changed``: an earlier commit under another fingerprint (the input's content, the model or a setting changed);
  its outputs are replaced (the nightly sets ``overwrite``).
- ``unchanged``: committed under tonight's fingerprint; skipped, nothing is computed.
- ``retry``: outputs of an earlier run that never committed (last night's failure, a killed run); resumed.

An input that cannot be planned (truncated, wrong band count) is ``rejected`` without stopping the others.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import Any

from segpipe.errors import InputError
from segpipe.io.ledger import read_commit
from segpipe.io.omezarr import read_segpipe_attrs
from segpipe.stages.plan import BatchPlan, ImageJob, image_name, plan_batch
from segpipe.stages.settings import settings_from_dict
from segpipe.storage import location, public_url

Pair = tuple[str, str | None]
REASONS = ("new", "changed", "unchanged", "retry")
STATUSES = ("processed", "skipped", "failed", "rejected")


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
        """The JSON form, URLs without credentials."""
        return {
            **asdict(self),
            "image": public_url(self.image),
            "truth": public_url(self.truth) if self.truth else None,
        }


def nightly_settings(
    out: str, model: str, chunk: int, halo: int | None, settings: dict[str, Any] | None
) -> dict[str, Any]:
    """``RunSettings`` values for the night.

    ``settings`` (any ``RunSettings`` field) go under the explicit parameters, which win; ``overwrite`` defaults to
    true, so a changed input replaces its outputs.
    """
    values = dict(settings or {})
    tiling = {**(values.get("tiling") or {}), "chunk": chunk}
    if halo is not None:
        tiling["halo"] = halo
    values = {"overwrite": True, **values, "model": model, "out": out, "tiling": tiling}
    settings_from_dict(values)  # unknown keys and bad values fail now, before any listing
    return values


def plan_inputs(
    pairs: list[Pair], settings: dict[str, Any], tracking_uri: str | None
) -> tuple[BatchPlan | None, list[NightlyImage]]:
    """One plan for every input that can be planned, and the rejected inputs.

    Images with and without a truth are planned apart (a plan takes truths for all of its images or for none) and
    merged.
    """
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
