"""Runs read back from MLflow as plain values.

``RunReader`` gives a run (``RunRecord``: its params, tags, metrics and times) and its nested image runs.
``check_reachable`` fails fast on an MLflow server that is down (MLflow's own client retries for about four minutes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from segpipe.errors import ConfigError, TrackingError
from segpipe.storage.urls import public_url
from segpipe.tracking.lineage import PARENT_TAG
from segpipe.tracking.store import check_tracking_uri, create_sqlite_store

_MISSING_RUN = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as logged: ``start_time`` and ``end_time`` in ms since the epoch (None if unset)."""

    run_id: str
    run_name: str
    experiment_id: str
    status: str
    start_time: int | None
    end_time: int | None
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]


def check_reachable(tracking_uri: str, timeout: float = 10.0) -> None:
    """For an ``http(s)`` tracking URI, one request to ``/health``.

    A server that does not answer is a ``TrackingError`` now rather than after MLflow's minutes of retries. Any HTTP
    answer counts as reachable.
    """
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


class RunReader:
    """Reads runs from the MLflow store at ``tracking_uri``.

    Opening one checks the URI and that the server answers, and creates a missing local SQLite store.

    Raises:
        ConfigError: a malformed URI. TrackingError: the server does not answer.
    """

    def __init__(self, tracking_uri: str) -> None:
        """Check ``tracking_uri`` and that it answers, create a missing SQLite store, open a client."""
        from mlflow import MlflowClient

        check_tracking_uri(tracking_uri)
        check_reachable(tracking_uri)
        create_sqlite_store(tracking_uri)
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri)

    def run(self, run_id: str) -> RunRecord:
        """Run ``run_id``.

        Raises:
            ConfigError: no such run. TrackingError: the store cannot be read.
        """
        from mlflow.exceptions import MlflowException

        try:
            return _record(self._client.get_run(run_id))
        except MlflowException as exc:
            if exc.error_code in _MISSING_RUN:
                raise ConfigError(f"{run_id}: no such run in MLflow at {public_url(self.tracking_uri)}") from None
            raise self._error("read the run", exc) from None
        except Exception as exc:  # requests errors, OSError, a store that cannot be opened...
            raise self._error("read the run", exc) from None

    def children(self, parent: RunRecord) -> list[RunRecord]:
        """The runs nested under ``parent`` (its image runs), in MLflow's search order.

        Raises:
            TrackingError: the store cannot be searched.
        """
        try:
            found = self._client.search_runs([parent.experiment_id], f"tags.{PARENT_TAG} = '{parent.run_id}'")
        except Exception as exc:  # MlflowException, requests errors, OSError...
            raise self._error("list image runs", exc) from None
        return [_record(run) for run in found]

    def _error(self, what: str, exc: Exception) -> TrackingError:
        first = (str(exc).strip().splitlines() or [""])[0]
        where = public_url(self.tracking_uri)
        return TrackingError(f"MLflow at {where}: cannot {what} ({type(exc).__name__}: {first})")


def _record(run: Any) -> RunRecord:
    return RunRecord(
        run_id=run.info.run_id,
        run_name=run.info.run_name or "",
        experiment_id=run.info.experiment_id,
        status=run.info.status,
        start_time=run.info.start_time,
        end_time=run.info.end_time,
        params=dict(run.data.params),
        tags=dict(run.data.tags),
        metrics=dict(run.data.metrics),
    )
