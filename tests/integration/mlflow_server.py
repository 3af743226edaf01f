"""A real ``mlflow server`` for integration tests: its own process group on a free loopback port, polled on
``/health`` until it answers (within a deadline), stopped with its whole process group after.

``start_mlflow_server(folder)`` serves a sqlite store in ``folder`` with artifacts proxied by the server
(``--artifacts-destination``); any other backend store or artifact destination can be passed, e.g. PostgreSQL and
``s3://`` as in ``infra/mlflow/docker-compose.yaml``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 180.0  # seconds; ~11 s on an idle 2-core machine, several times that under load
STOP_TIMEOUT = 20.0
ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it


@dataclass(frozen=True)
class MlflowServer:
    """A running server: its URL (``http://127.0.0.1:PORT``), process (a process-group leader) and log file."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    """A TCP port nothing listens on right now on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def start_mlflow_server(
    folder: Path,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT,
) -> Iterator[MlflowServer]:
    """``mlflow server`` on 127.0.0.1 (default: ``sqlite:///FOLDER/mlflow.db``, artifacts in ``FOLDER/artifacts``).

    ``env`` is added to this process's environment. The server is stopped, its process group killed, on exit.
    """
    folder.mkdir(parents=True, exist_ok=True)
    backend = backend_store_uri or f"sqlite:///{folder / 'mlflow.db'}"
    artifacts = artifacts_destination or str(folder / "artifacts")
    for attempt in range(1, ATTEMPTS + 1):
        server = _launch(folder, backend, artifacts, env or {}, attempt)
        try:
            if _wait_healthy(server, timeout, last_attempt=attempt == ATTEMPTS):
                break
        except BaseException:
            stop(server.process)
            raise
        stop(server.process)  # it exited early: most likely the port was taken meanwhile
    try:
        yield server
    finally:
        stop(server.process)


def _launch(folder: Path, backend: str, artifacts: str, env: Mapping[str, str], attempt: int) -> MlflowServer:
    port = free_port()
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--workers", "1", "--backend-store-uri", backend, "--artifacts-destination", artifacts]
    # No background job runner: it is not needed here, and it keeps a folder in /dev/shm.
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **env}
    log = folder / f"server-{attempt}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=environment, start_new_session=True
        )
    return MlflowServer(f"http://127.0.0.1:{port}", process, log)


def _wait_healthy(server: MlflowServer, timeout: float, last_attempt: bool) -> bool:
    """Poll ``/health`` until it answers ``OK``: True; False if the server exited (unless this was the last try:
    then fail with its log); fail with its log when ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            if last_attempt:
                raise AssertionError(f"mlflow server exited with {server.process.returncode}:\n{_tail(server.log)}")
            return False
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=5) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"mlflow server at {server.url} not healthy after {timeout:g} s:\n{_tail(server.log)}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group ``process`` leads, SIGKILL it after ``STOP_TIMEOUT``; reap the leader and
    SIGKILL whatever of the group is left (uvicorn workers outlive a leader that was killed)."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        _signal_group(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)
    _signal_group(process.pid, signal.SIGKILL)


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` is still running."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
