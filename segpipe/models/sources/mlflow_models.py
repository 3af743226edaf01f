"""``models:/NAME@ALIAS`` and ``models:/NAME/VERSION``: model files held by the MLflow model registry.

A version registered by segpipe (``segpipe.models.register``) holds the model file as-is and its card as
artifacts of a run, and is tagged with the file name, sha256 and format. Finding a version downloads that folder
and finds the file in it like a local one, recording the exact version in ``ModelRef.registry``. MLflow is
imported lazily. Tracking URI: the explicit one, else ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from segpipe.errors import ModelError, one_line
from segpipe.models.ref import ModelRef, RegistryEntry, sha256_of
from segpipe.models.sources.base import Found, ModelSource, Request
from segpipe.models.sources.files import find_file
from segpipe.models.sources.schemes import register_source

SCHEME = "models"
PREFIX = f"{SCHEME}:/"
ARTIFACT_DIR = "model"
FILE_TAG, SHA_TAG, FORMAT_TAG = "segpipe.file", "segpipe.sha256", "segpipe.format"
_SPEC = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


def tracking_uri_or_env(tracking_uri: str | None) -> str:
    """The explicit tracking URI, else ``MLFLOW_TRACKING_URI``; one clear error when neither is set."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ModelError("the MLflow model registry needs a tracking URI: pass one or set MLFLOW_TRACKING_URI")
    return uri


def find_registered(spec: str, request: Request) -> Found:
    """Download ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` and find its file like a local one."""
    match = _SPEC.match(spec)
    if match is None:
        raise ModelError(f"{spec}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    uri = tracking_uri_or_env(request.tracking_uri)
    version = _find_version(registry_client(uri), spec, match["name"], match["alias"], match["version"])
    filename = version.tags.get(FILE_TAG)
    if not filename:
        raise ModelError(f"{spec}: version {version.version} was not registered by segpipe (no {FILE_TAG} tag)")
    entry = RegistryEntry(match["name"], int(version.version), f"{version.source}/{filename}", match["alias"], uri)
    label = f"{spec} ({filename})"  # errors name the version, not the temporary download
    with tempfile.TemporaryDirectory(prefix="segpipe-model-") as folder:
        local = str(Path(download(version.source, uri, folder, spec)) / filename)
        try:
            # the version's own card, not an inline one
            found = find_file(local, Request(request.trust_pickle, trust_code=request.trust_code))
        except ModelError as exc:
            raise ModelError(str(exc).replace(local, label)) from None
    expected, digest = version.tags.get(SHA_TAG), sha256_of(found.payload)
    if expected and expected != digest:
        raise ModelError(f"{spec}: downloaded file has sha256 {digest[:12]}..., its version {expected[:12]}...")
    return replace(found, uri=spec, path=entry.source, label=label, registry=entry)


def read_registered(ref: ModelRef) -> bytes:
    """The model file of a registry version, downloaded again (for a worker that was not sent the bytes)."""
    entry = ref.registry
    if entry is None:
        raise ModelError(f"{ref.uri}: no registry version recorded")
    uri = tracking_uri_or_env(entry.tracking_uri)
    with tempfile.TemporaryDirectory(prefix="segpipe-model-") as folder:
        return Path(download(entry.source, uri, folder, entry.pinned_uri)).read_bytes()


def registry_client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` for the tracking server and its model registry (a sqlite store is created first)."""
    from mlflow import MlflowClient

    from segpipe.tracking import create_sqlite_store

    create_sqlite_store(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def download(artifact_uri: str, tracking_uri: str, folder: str, spec: str) -> str:
    """Download ``artifact_uri`` into ``folder``; returns the local path; errors name ``spec``."""
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=artifact_uri, tracking_uri=tracking_uri, dst_path=folder
        )
        return str(local)
    except (MlflowException, OSError) as exc:
        raise ModelError(f"{spec}: cannot download {artifact_uri} ({one_line(exc)})") from None


def _find_version(client: Any, spec: str, name: str, alias: str | None, version: str | None) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, version)
    except MlflowException as exc:
        raise ModelError(f"{spec}: not in the model registry ({one_line(exc)})") from None


SOURCE = ModelSource("MLflow model registry", (SCHEME,), find_registered, read_registered)
register_source(SOURCE)
