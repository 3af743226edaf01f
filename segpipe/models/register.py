"""``register_model``: a model file and its card as a new version in the MLflow model registry.

A version holds the model FILE as-is plus its card (JSON) as artifacts of a run, deliberately not an
``mlflow.pytorch`` flavour (mlflow 3's default pt2 format needs an input example and rejects TorchScript, and
segpipe reads its own formats). The version is tagged with the file name, sha256 and format, which the
``models:/`` source (``segpipe.models.sources.mlflow_models``) reads back. MLflow is imported lazily.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segpipe.errors import ModelError, TrackingError
from segpipe.models.cache import model_payload
from segpipe.models.ref import ModelRef
from segpipe.models.resolve import resolve_model
from segpipe.models.sources.mlflow_models import (
    ARTIFACT_DIR,
    FILE_TAG,
    FORMAT_TAG,
    PREFIX,
    SHA_TAG,
    registry_client,
    tracking_uri_or_env,
)
from segpipe.storage import public_url

EXPERIMENT = "segpipe-models"


@dataclass(frozen=True)
class RegisteredModel:
    """A registered model version: ``uri`` is ``models:/NAME/VERSION``."""

    name: str
    version: int
    uri: str


def register_model(
    path: str | os.PathLike[str],
    name: str,
    alias: str | None = None,
    tracking_uri: str | None = None,
    *,
    trust_pickle: bool = False,
    channels: int | None = None,
    experiment: str = EXPERIMENT,
    trust_code: bool = False,
) -> RegisteredModel:
    """Validate the model at ``path``, log its file and card to a run, and register that run's folder.

    ``channels`` probes a model that has no card (its band count is then written into the logged card). A
    bioimage.io package is registered as its zip (a folder's ``rdf.yaml`` packed into ``<folder>.zip``);
    ``trust_code`` lets one with only pytorch_state_dict weights run its architecture code.

    Returns:
        The new version; ``alias`` (e.g. ``champion``) points at it when given.

    Raises:
        TrackingError: MLflow refused or could not be reached (one line, exit 5).
    """
    ref = resolve_model(path, trust_pickle=trust_pickle, channels=channels, trust_code=trust_code)
    if ref.format == "baseline" or ref.registry is not None:
        raise ModelError(f"{ref.uri}: only a model file can be registered")
    uri = tracking_uri_or_env(tracking_uri)
    from mlflow.exceptions import MlflowException

    try:
        return _register(ref, name, alias, uri, experiment)
    except (MlflowException, OSError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise TrackingError(f"MLflow at {public_url(uri)}: cannot register {name} ({first})") from None


def _register(ref: ModelRef, name: str, alias: str | None, uri: str, experiment: str) -> RegisteredModel:
    """Log the model's file and card to a run and register it as a new version of ``name``."""
    client = registry_client(uri)
    filename = _file_name(ref)
    run_id = _log_model_run(client, _experiment_id(client, experiment, uri), ref, filename)
    _ensure_registered(client, name)
    tags = {FILE_TAG: filename, SHA_TAG: ref.sha256, FORMAT_TAG: ref.format}
    source = f"{client.get_run(run_id).info.artifact_uri}/{ARTIFACT_DIR}"
    version = client.create_model_version(name, source, run_id=run_id, tags=tags, description=ref.card.name)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return RegisteredModel(name, int(version.version), f"{PREFIX}{name}/{version.version}")


def _file_name(ref: ModelRef) -> str:
    """The file the version holds: the model's own name; a package folder's as ``<folder>.zip``."""
    path = Path(ref.path)
    if ref.format == "bioimageio" and path.suffix.lower() != ".zip":
        return f"{path.resolve().parent.name or 'package'}.zip"
    return path.name


def _experiment_id(client: Any, experiment: str, tracking_uri: str) -> str:
    """The experiment's id.

    A new experiment keeps its artifacts where segpipe's runs keep theirs (beside a sqlite store, never the current
    folder).
    """
    from segpipe.tracking import default_artifact_root

    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return str(found.experiment_id)
    root = default_artifact_root(tracking_uri)
    return str(client.create_experiment(experiment, artifact_location=Path(root).as_uri() if root else None))


def _log_model_run(client: Any, experiment_id: str, ref: ModelRef, filename: str) -> str:
    """A finished run holding ``model/<file>`` and ``model/<stem>.json`` (the resolved card); returns its id."""
    run = client.create_run(experiment_id, tags={SHA_TAG: ref.sha256, FORMAT_TAG: ref.format})
    with tempfile.TemporaryDirectory(prefix="segpipe-register-") as folder:
        (Path(folder) / filename).write_bytes(model_payload(ref))
        (Path(folder) / f"{Path(filename).stem}.json").write_text(json.dumps(ref.card.to_dict(), indent=2))
        client.log_artifacts(run.info.run_id, folder, ARTIFACT_DIR)
    client.log_param(run.info.run_id, "model_uri", ref.uri)
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def _ensure_registered(client: Any, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name)


__all__ = ["EXPERIMENT", "RegisteredModel", "register_model"]
