"""The MLflow model registry as a source of models: ``register_model`` and ``models:/NAME@ALIAS`` specs.

A version holds the model FILE as-is plus its card (JSON) as artifacts of a run, deliberately not an
``mlflow.pytorch`` flavour (mlflow 3's default pt2 format needs an input example and rejects TorchScript, and
segpipe reads its own formats). The version is tagged with the file name, sha256 and format. Resolving
``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` downloads that folder and resolves the file like a local
one, recording the exact version in ``ModelRef.registry``. The only models module that imports mlflow (lazily).

Tracking URI: the explicit argument, else ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from segpipe.errors import ModelError, one_line
from segpipe.models.cache import model_payload
from segpipe.models.ref import ModelRef, RegistryEntry
from segpipe.models.resolve import REGISTRY_PREFIX, resolve_model

EXPERIMENT = "segpipe-models"
ARTIFACT_DIR = "model"
FILE_TAG, SHA_TAG, FORMAT_TAG = "segpipe.file", "segpipe.sha256", "segpipe.format"
_SPEC = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class RegisteredModel:
    """A registered model version: ``uri`` is ``models:/NAME/VERSION``."""

    name: str
    version: int
    uri: str


def tracking_uri_or_env(tracking_uri: str | None) -> str:
    """The explicit tracking URI, else ``MLFLOW_TRACKING_URI``; one clear error when neither is set."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ModelError("the MLflow model registry needs a tracking URI: pass one or set MLFLOW_TRACKING_URI")
    return uri


def register_model(
    path: str | os.PathLike[str],
    name: str,
    alias: str | None = None,
    tracking_uri: str | None = None,
    *,
    trust_pickle: bool = False,
    channels: int | None = None,
    experiment: str = EXPERIMENT,
) -> RegisteredModel:
    """Validate the model at ``path``, log its file and card to a run, and register that run's folder.

    ``channels`` probes a model that has no card (its band count is then written into the logged card).

    Returns:
        The new version; ``alias`` (e.g. ``champion``) points at it when given.
    """
    ref = resolve_model(path, trust_pickle=trust_pickle, channels=channels)
    if ref.format == "baseline" or ref.registry is not None:
        raise ModelError(f"{ref.uri}: only a model file can be registered")
    uri = tracking_uri_or_env(tracking_uri)
    client = _client(uri)
    filename = Path(ref.path).name
    run_id = _log_model_run(client, _experiment_id(client, experiment, uri), ref, filename)
    _ensure_registered(client, name)
    tags = {FILE_TAG: filename, SHA_TAG: ref.sha256, FORMAT_TAG: ref.format}
    source = f"{client.get_run(run_id).info.artifact_uri}/{ARTIFACT_DIR}"
    version = client.create_model_version(name, source, run_id=run_id, tags=tags, description=ref.card.name)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return RegisteredModel(name, int(version.version), f"{REGISTRY_PREFIX}{name}/{version.version}")


def _experiment_id(client: Any, experiment: str, tracking_uri: str) -> str:
    """The experiment's id; a new one keeps its artifacts where segpipe's runs keep theirs (beside a sqlite
    store, never the current folder)."""
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


def resolve_registered(
    spec: str, trust_pickle: bool = False, channels: int | None = None, *, tracking_uri: str | None = None
) -> ModelRef:
    """Download ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` and resolve its file like a local one."""
    match = _SPEC.match(spec)
    if match is None:
        raise ModelError(f"{spec}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    uri = tracking_uri_or_env(tracking_uri)
    version = _find_version(_client(uri), spec, match["name"], match["alias"], match["version"])
    filename = version.tags.get(FILE_TAG)
    if not filename:
        raise ModelError(f"{spec}: version {version.version} was not registered by segpipe (no {FILE_TAG} tag)")
    entry = RegistryEntry(match["name"], int(version.version), f"{version.source}/{filename}", match["alias"], uri)
    with tempfile.TemporaryDirectory(prefix="segpipe-model-") as folder:
        local = str(Path(_download(version.source, uri, folder, spec)) / filename)
        try:
            ref = resolve_model(local, trust_pickle, channels)
        except ModelError as exc:  # name the version, not the temporary download
            raise ModelError(str(exc).replace(local, f"{spec} ({filename})")) from None
    expected = version.tags.get(SHA_TAG)
    if expected and expected != ref.sha256:
        raise ModelError(f"{spec}: downloaded file has sha256 {ref.sha256[:12]}..., its version {expected[:12]}...")
    return replace(ref, uri=spec, path=entry.source, registry=entry)


def read_payload(entry: RegistryEntry) -> bytes:
    """The model file of a registry version, downloaded again (for a worker that was not sent the bytes)."""
    uri = tracking_uri_or_env(entry.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="segpipe-model-") as folder:
        return Path(_download(entry.source, uri, folder, entry.pinned_uri)).read_bytes()


def _find_version(client: Any, spec: str, name: str, alias: str | None, version: str | None) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, version)
    except MlflowException as exc:
        raise ModelError(f"{spec}: not in the model registry ({one_line(exc)})") from None


def _download(artifact_uri: str, tracking_uri: str, folder: str, spec: str) -> str:
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=artifact_uri, tracking_uri=tracking_uri, dst_path=folder
        )
        return str(local)
    except (MlflowException, OSError) as exc:
        raise ModelError(f"{spec}: cannot download {artifact_uri} ({one_line(exc)})") from None


def _client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    from segpipe.tracking import create_sqlite_store

    create_sqlite_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


__all__ = ["RegisteredModel", "read_payload", "register_model", "resolve_registered"]
