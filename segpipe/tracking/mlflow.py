"""MLflow behind a small protocol: ``MlflowTracker`` for real runs, ``NullTracker`` to opt out.

MLflow is used through ``MlflowClient`` with explicit run ids (no fluent ``active_run`` state), so logging is
safe from any thread a Prefect task runs in. One parent run per batch, one nested run per image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from segpipe.errors import TrackingError
from segpipe.storage.urls import public_url
from segpipe.tracking.lineage import IMAGE_TAG, PARENT_TAG
from segpipe.tracking.store import (
    DEFAULT_EXPERIMENT,
    check_tracking_uri,
    create_sqlite_store,
    default_artifact_root,
    sqlite_path,
)

REQUESTS_IN_FLIGHT = 8  # concurrent requests to a tracking server while a batch's image runs are logged
T = TypeVar("T")


@dataclass(frozen=True)
class ImageRun:
    """One image's run as it is logged: its params, metrics and the local files uploaded as its artifacts."""

    name: str
    params: dict[str, Any]
    metrics: dict[str, float]
    artifacts: tuple[str, ...] = ()


class Tracker(Protocol):
    """Where a batch is logged: a parent run per batch, a nested run per image."""

    def start_batch(self, params: dict[str, Any], tags: dict[str, str], metrics: dict[str, float] | None = None) -> str:
        """Start the batch's parent run with ``params``, ``tags`` and ``metrics``; return its id."""

    def log_images(self, runs: Sequence[ImageRun]) -> list[str]:
        """Log every image's finished run, nested in the batch run; return their ids in order."""

    def log_metrics(self, run_id: str, values: dict[str, float]) -> None:
        """Log ``values`` on run ``run_id``."""

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> None:
        """Upload the file ``path`` to the run's artifacts, under ``artifact_path``."""

    def log_artifacts(self, run_id: str, directory: str, artifact_path: str) -> None:
        """Upload what is below ``directory`` to the run's artifacts, under ``artifact_path``."""

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        """End run ``run_id`` with ``status``."""


class NullTracker:
    """Tracks nothing; returns empty run ids."""

    tracking_uri = ""

    def start_batch(self, params: dict[str, Any], tags: dict[str, str], metrics: dict[str, float] | None = None) -> str:
        """Start nothing; return an empty run id."""
        return ""

    def log_images(self, runs: Sequence[ImageRun]) -> list[str]:
        """Log nothing; return an empty run id per image."""
        return ["" for _ in runs]

    def log_metrics(self, run_id: str, values: dict[str, float]) -> None:
        """Log nothing."""
        return None

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> None:
        """Upload nothing."""
        return None

    def log_artifacts(self, run_id: str, directory: str, artifact_path: str) -> None:
        """Upload nothing."""
        return None

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        """End nothing."""
        return None


class MlflowTracker:
    """Logs to MLflow at ``tracking_uri``.

    Artifacts of a new experiment go to ``artifact_root`` (default: ``default_artifact_root``).
    """

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: str | None = None) -> None:
        """Open the store (created if missing) and the experiment (created with ``artifact_root`` if new)."""
        from mlflow.tracking import MlflowClient

        check_tracking_uri(tracking_uri)
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # its run URLs carry credentials
        self.tracking_uri = public_url(tracking_uri)
        self._raw_uri = tracking_uri
        self._call("create the store", create_sqlite_store, tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id = self._call("open experiment", self._experiment_id, experiment, artifact_root)
        self.batch_run_id = ""
        self._artifact_uris: dict[str, str] = {}  # run id -> artifact URI, for the runs created here
        self._repos: dict[str, Any] = {}
        self._remote = sqlite_path(tracking_uri) is None and not tracking_uri.startswith("file:")

    def _experiment_id(self, name: str, artifact_root: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        artifact_root = artifact_root or default_artifact_root(self._raw_uri)
        location = Path(artifact_root).resolve().as_uri() if artifact_root else None
        return str(self.client.create_experiment(name, artifact_location=location))

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as exc:  # MLflow raises MlflowException, OSError, requests errors...
            raise TrackingError(f"MLflow at {self.tracking_uri}: cannot {what} ({type(exc).__name__}: {exc})") from None

    def start_batch(self, params: dict[str, Any], tags: dict[str, str], metrics: dict[str, float] | None = None) -> str:
        """Start the batch's parent run, named by model, stitch and image count; return its id.

        Its params and ``metrics`` go in one ``log_batch`` request.
        """
        name = f"{params.get('model', 'batch')} {params.get('stitch', '')} x{len(params.get('images', []))}"
        self.batch_run_id = self._create_run(name, tags)
        self._log_batch(self.batch_run_id, params, metrics or {})
        return self.batch_run_id

    def log_images(self, runs: Sequence[ImageRun]) -> list[str]:
        """Log every image's run, nested in the batch run, and end it; return their ids in order.

        The runs are created together, then each gets its params and metrics in one ``log_batch`` request, its
        artifacts and its end. A server's requests go several at a time; a SQLite or file store takes them in turn
        (concurrent writers would wait on its lock).
        """
        tagged = [(run.name, {PARENT_TAG: self.batch_run_id, IMAGE_TAG: run.name}) for run in runs]
        ids = self._map(lambda pair: self._create_run(*pair), tagged)

        def finish(pair: tuple[str, ImageRun]) -> None:
            run_id, run = pair
            self._log_batch(run_id, run.params, run.metrics)
            for path in run.artifacts:
                self.log_artifact(run_id, path)
            self.end(run_id)

        self._map(finish, list(zip(ids, runs, strict=True)))
        return ids

    def _map(self, fn: Callable[[Any], T], items: list[Any]) -> list[T]:
        """``fn`` on each item: several at a time against a server, in turn against a local store."""
        if len(items) < 2 or not self._remote:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(REQUESTS_IN_FLIGHT, len(items))) as pool:
            return list(pool.map(fn, items))

    def _create_run(self, name: str, tags: dict[str, str]) -> str:
        run = self._call("create run", self.client.create_run, self.experiment_id, None, tags, name)
        self._artifact_uris[run.info.run_id] = run.info.artifact_uri
        return str(run.info.run_id)

    def _log_batch(self, run_id: str, params: dict[str, Any], values: dict[str, float]) -> None:
        """Params (values cut at MLflow's 6000 characters) and finite metrics in one request."""
        from mlflow.entities import Metric, Param

        now = _now_ms()
        metrics = [Metric(k, float(v), now, 0) for k, v in values.items() if v is not None and math.isfinite(v)]
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        if metrics or items:
            self._call("log params and metrics", self.client.log_batch, run_id, metrics, items)

    def log_metrics(self, run_id: str, values: dict[str, float]) -> None:
        """Log ``values`` on run ``run_id`` in one batch, leaving out None and non-finite ones."""
        self._log_batch(run_id, {}, values)

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> None:
        """Upload the file ``path`` to the run's artifacts, under ``artifact_path``.

        A run this tracker created uploads to the artifact URI its creation returned, without reading the run back.
        """
        if run_id not in self._artifact_uris:
            self._call("log artifact", self.client.log_artifact, run_id, path, artifact_path)
            return
        self._call("log artifact", self._artifact_repo(run_id).log_artifact, path, artifact_path)

    def _artifact_repo(self, run_id: str) -> Any:
        """The artifact repository of a run this tracker created, as ``MlflowClient`` resolves it."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
        from mlflow.utils.uri import add_databricks_profile_info_to_artifact_uri

        if run_id not in self._repos:
            uri = add_databricks_profile_info_to_artifact_uri(self._artifact_uris[run_id], self._raw_uri)  # type: ignore[no-untyped-call]
            self._repos[run_id] = get_artifact_repository(uri, tracking_uri=self._raw_uri)
        return self._repos[run_id]

    def log_artifacts(self, run_id: str, directory: str, artifact_path: str) -> None:
        """Upload what is below ``directory`` to the run's artifacts, under ``artifact_path``."""
        self._call("log artifacts", self.client.log_artifacts, run_id, directory, artifact_path)

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        """End run ``run_id`` with ``status``."""
        self._call("end run", self.client.set_terminated, run_id, status)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def fetch_runs(
    tracking_uri: str, run_ids: list[str], experiment: str | None = None, limit: int = 10
) -> list[dict[str, Any]]:
    """Runs as ``{run_id, name, params, metrics}``.

    The given ids, or else the latest ``limit`` batch runs (runs without a parent) of ``experiment``.
    """
    from mlflow.tracking import MlflowClient

    check_tracking_uri(tracking_uri)
    create_sqlite_store(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        if run_ids:
            runs = [client.get_run(run_id) for run_id in run_ids]
        else:
            found = client.get_experiment_by_name(experiment or DEFAULT_EXPERIMENT)
            if found is None:
                raise TrackingError(f"MLflow at {public_url(tracking_uri)}: no experiment {experiment!r}")
            runs = [
                r
                for r in client.search_runs(
                    [found.experiment_id], order_by=["attributes.start_time DESC"], max_results=limit * 20
                )
                if PARENT_TAG not in r.data.tags
            ][:limit]
    except TrackingError:
        raise
    except Exception as exc:  # MlflowException for an unknown id, connection errors...
        raise TrackingError(f"MLflow at {public_url(tracking_uri)}: cannot read runs ({exc})") from None
    return [
        {
            "run_id": r.info.run_id,
            "name": r.info.run_name,
            "params": dict(r.data.params),
            "metrics": dict(r.data.metrics),
        }
        for r in runs
    ]
