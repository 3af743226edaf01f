"""Lineage of a batch run read back from MLflow: which inputs, which model bytes, which code, where it ran.

``read_lineage`` reads the params and tags a batch run is logged with (``segpipe.tracking.batch_log``: params
``model``, ``model_uri``, ``model_sha256``, ``model_registry_*``, ``cluster``, ``images``, ``out``; tags as
``segpipe.tracking.Lineage.to_tags`` writes them, read back by ``Lineage.from_tags``) and its nested image runs
into a ``RunLineage``; ``render_lineage`` prints it. Every URL is shown without its
``user:password@`` part. ``check_reachable`` fails fast on an MLflow server that is down (MLflow's own client
retries for about four minutes).
"""

from __future__ import annotations

import ast
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from segpipe.errors import ConfigError, TrackingError
from segpipe.storage import public_url
from segpipe.tracking import (
    IMAGE_TAG,
    PARENT_TAG,
    InputLineage,
    Lineage,
    check_tracking_uri,
    create_sqlite_store,
)

_MISSING_RUN = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


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


def check_reachable(tracking_uri: str, timeout: float = 10.0) -> None:
    """For an ``http(s)`` tracking URI, one request to ``/health``; a server that does not answer is a
    ``TrackingError`` now rather than after MLflow's minutes of retries. Any HTTP answer counts as reachable."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=timeout, verify=_tls_verify())
    except requests.RequestException as exc:
        reason = type(exc).__name__
        message = f"MLflow at {public_url(tracking_uri)}: unreachable ({reason}; is the server running?)"
        raise TrackingError(message) from None


def _tls_verify() -> bool | str:
    """Verify TLS as MLflow's client does: ``MLFLOW_TRACKING_INSECURE_TLS``, ``MLFLOW_TRACKING_SERVER_CERT_PATH``."""
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1"):
        return False
    return os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True


def read_lineage(run_id: str, tracking_uri: str) -> RunLineage:
    """The lineage of batch run ``run_id`` (an image run's id gives its batch's lineage).

    Raises:
        ConfigError: no such run. TrackingError: the tracking server cannot be reached or read.
    """
    from mlflow import MlflowClient

    check_tracking_uri(tracking_uri)
    check_reachable(tracking_uri)
    create_sqlite_store(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    run = _get_run(client, run_id, tracking_uri)
    parent = run.data.tags.get(PARENT_TAG)
    if parent:
        run = _get_run(client, parent, tracking_uri)
    children = _call(
        tracking_uri,
        "list image runs",
        client.search_runs,
        [run.info.experiment_id],
        f"tags.{PARENT_TAG} = '{run.info.run_id}'",
    )
    return _lineage(run, children, public_url(tracking_uri))


def _get_run(client: Any, run_id: str, tracking_uri: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in _MISSING_RUN:
            raise ConfigError(f"{run_id}: no such run in MLflow at {public_url(tracking_uri)}") from None
        raise _tracking_error(tracking_uri, "read the run", exc) from None
    except Exception as exc:  # requests errors, OSError, a store that cannot be opened...
        raise _tracking_error(tracking_uri, "read the run", exc) from None


def _call(tracking_uri: str, what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:  # MlflowException, requests errors, OSError...
        raise _tracking_error(tracking_uri, what, exc) from None


def _tracking_error(tracking_uri: str, what: str, exc: Exception) -> TrackingError:
    first = (str(exc).strip().splitlines() or [""])[0]
    return TrackingError(f"MLflow at {public_url(tracking_uri)}: cannot {what} ({type(exc).__name__}: {first})")


def _lineage(run: Any, children: list[Any], tracking_uri: str) -> RunLineage:
    params = dict(run.data.params)
    tags = Lineage.from_tags(dict(run.data.tags))
    return RunLineage(
        run_id=run.info.run_id,
        run_name=run.info.run_name or "",
        status=run.info.status,
        started=_iso(run.info.start_time),
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


def _image_run(run: Any) -> ImageRun:
    params = run.data.params
    dice = run.data.metrics.get("mean_dice")
    return ImageRun(
        run_id=run.info.run_id,
        name=run.data.tags.get(IMAGE_TAG) or run.info.run_name or "",
        image=public_url(params.get("image", "")),
        truth=public_url(params.get("truth", "")),
        status=run.info.status,
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


__all__ = [
    "ImageRun",
    "InputLineage",
    "ModelLineage",
    "RunLineage",
    "check_reachable",
    "read_lineage",
    "render_lineage",
]
