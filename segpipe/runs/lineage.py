"""Lineage of a batch run read back from MLflow: which inputs, which model bytes, which code, where it ran.

``read_lineage`` reads the params and tags a batch run is logged with (``segpipe.tracking.batch_log``: params
``model``, ``model_uri``, ``model_sha256``, ``model_registry_*``, ``cluster``, ``images``, ``out``; tags as
``segpipe.tracking.Lineage.to_tags`` writes them, read back by ``Lineage.from_tags``) and its nested image runs
into a ``RunLineage``; ``render_lineage`` prints it. Every URL is shown without its
``user:password@`` part. The runs are read through ``segpipe.tracking.RunReader``: no MLflow import here.
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from segpipe.storage import public_url
from segpipe.tracking import IMAGE_TAG, PARENT_TAG, InputLineage, Lineage, RunReader, RunRecord


@dataclass(frozen=True)
class ModelLineage:
    """The model a run used: what was asked for, and exactly which bytes (and registry version) ran."""

    name: str
    uri: str
    format: str
    sha256: str
    registry_name: str | None = None
    registry_version: int | None = None
    registry_source: str | None = None

    @property
    def pinned_uri(self) -> str | None:
        """``models:/NAME/VERSION`` for a registry model, else None."""
        if self.registry_name is None or self.registry_version is None:
            return None
        return f"models:/{self.registry_name}/{self.registry_version}"


@dataclass(frozen=True)
class ImageRun:
    """A nested image run of the batch."""

    run_id: str
    name: str
    image: str
    truth: str
    status: str
    mean_dice: float | None


@dataclass(frozen=True)
class RunLineage:
    """Everything a batch run recorded about where its result came from."""

    run_id: str
    run_name: str
    status: str
    started: str
    tracking_uri: str
    model: ModelLineage
    inputs: tuple[InputLineage, ...]
    segpipe_version: str
    git_commit: str
    segpipe_run_id: str
    prefect_flow_run_id: str
    prefect_deployment: str
    cluster: str
    out: str
    images: tuple[ImageRun, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the model also carries its ``pinned_uri``)."""
        values = asdict(self)
        values["model"]["pinned_uri"] = self.model.pinned_uri
        return values


def read_lineage(run_id: str, tracking_uri: str) -> RunLineage:
    """The lineage of batch run ``run_id`` (an image run's id gives its batch's lineage).

    Raises:
        ConfigError: no such run. TrackingError: the tracking server cannot be reached or read.
    """
    reader = RunReader(tracking_uri)
    run = reader.run(run_id)
    parent = run.tags.get(PARENT_TAG)
    if parent:
        run = reader.run(parent)
    return _lineage(run, reader.children(run), public_url(tracking_uri))


def _lineage(run: RunRecord, children: list[RunRecord], tracking_uri: str) -> RunLineage:
    params = run.params
    tags = Lineage.from_tags(run.tags)
    return RunLineage(
        run_id=run.run_id,
        run_name=run.run_name,
        status=run.status,
        started=_iso(run.start_time),
        tracking_uri=tracking_uri,
        model=_model(params, tags),
        inputs=_inputs(params, tags),
        segpipe_version=tags.segpipe_version,
        git_commit=tags.git_commit,
        segpipe_run_id=params.get("run_id") or tags.run_id,
        prefect_flow_run_id=tags.prefect_flow_run_id,
        prefect_deployment=tags.prefect_deployment,
        cluster=public_url(params.get("cluster") or tags.cluster),
        out=public_url(params.get("out", "")),
        images=tuple(sorted((_image_run(child) for child in children), key=lambda image: image.name)),
    )


def _model(params: dict[str, str], tags: Lineage) -> ModelLineage:
    """The model from the params, else from the lineage tags."""

    def value(key: str) -> str:
        return params.get(key) or (tags.model_uri if key == "model_uri" else tags.model_value(key))

    version = value("model_registry_version")
    return ModelLineage(
        name=value("model"),
        uri=public_url(value("model_uri")),
        format=value("model_format"),
        sha256=value("model_sha256"),
        registry_name=value("model_registry_name") or None,
        registry_version=int(version) if version.isdigit() else None,
        registry_source=public_url(value("model_registry_source")) or None,
    )


def _inputs(params: dict[str, str], tags: Lineage) -> tuple[InputLineage, ...]:
    """From the lineage tags; a run without them falls back to its ``images`` param."""
    found = tags.inputs or tuple(
        InputLineage(i, str(url), "") for i, url in enumerate(_literal_list(params.get("images", "")))
    )
    return tuple(InputLineage(i.index, public_url(i.url), i.fingerprint) for i in found)


def _literal_list(text: str) -> list[Any]:
    """A param logged as ``str(list)``, parsed back; anything else gives []."""
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return list(parsed) if isinstance(parsed, (list, tuple)) else []


def _image_run(run: RunRecord) -> ImageRun:
    params = run.params
    dice = run.metrics.get("mean_dice")
    return ImageRun(
        run_id=run.run_id,
        name=run.tags.get(IMAGE_TAG) or run.run_name,
        image=public_url(params.get("image", "")),
        truth=public_url(params.get("truth", "")),
        status=run.status,
        mean_dice=float(dice) if dice is not None else None,
    )


def _iso(milliseconds: int | None) -> str:
    if not milliseconds:
        return ""
    return datetime.fromtimestamp(milliseconds / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def render_lineage(lineage: RunLineage) -> str:
    """The lineage as aligned text lines, for a terminal ('-' where the run recorded nothing)."""
    model = lineage.model
    rows = [
        ("run", f"{lineage.run_id}  {lineage.run_name}  {lineage.status}  {lineage.started}"),
        ("tracking", lineage.tracking_uri),
        ("model", f"{_or_dash(model.name)}  {_or_dash(model.uri)}  ({_or_dash(model.format)})"),
        ("  sha256", model.sha256),
    ]
    if model.pinned_uri is not None:
        rows.append(("  registry", f"{model.registry_name} version {model.registry_version} ({model.pinned_uri})"))
        rows.append(("  source", model.registry_source or ""))
    rows += [
        ("segpipe", f"{_or_dash(lineage.segpipe_version)}  git {_or_dash(lineage.git_commit)}"),
        ("run id", lineage.segpipe_run_id),
        (
            "prefect",
            f"flow run {_or_dash(lineage.prefect_flow_run_id)}  deployment {_or_dash(lineage.prefect_deployment)}",
        ),
        ("cluster", lineage.cluster),
        ("out", lineage.out),
        ("inputs", str(len(lineage.inputs))),
    ]
    lines = [f"{label:<13}{_or_dash(text)}" for label, text in rows]
    lines += [f"  {i.index:<3}{i.url}  fingerprint {_or_dash(i.fingerprint)}" for i in lineage.inputs]
    lines.append(f"{'image runs':<13}{len(lineage.images)}")
    return "\n".join(lines + [_image_line(image) for image in lineage.images])


def _image_line(image: ImageRun) -> str:
    dice = "n/a" if image.mean_dice is None else f"{image.mean_dice:.4f}"
    return f"  {image.name}  run {image.run_id}  {image.status}  mean dice {dice}  {image.image}"


def _or_dash(text: str | None) -> str:
    return text if text else "-"
