"""A real ``mlflow server`` for integration tests: its own process group on a free loopback port, polled on
``/health`` until it answers (within a deadline), stopped with its whole process group after.

``start_mlflow_server(folder)`` serves a sqlite store in ``folder`` with artifacts proxied by the server
(``--artifacts-destination``); any other backend store or artifact destination can be passed, e.g. PostgreSQL and
``s3://`` as in ``infra/mlflow/docker-compose.yaml``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 180.0  # seconds; ~11 s on an idle 2-core machine, several times that under load
STOP_TIMEOUT = 20.0
ATTEMPTS = 3  # a free port can be taken by someone else before the server binds it
MLFLOW = Path(sys.executable).with_name("mlflow")


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


Launcher = Callable[[int], tuple[list[str], dict[str, str]]]  # port -> (command, environment added)


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
    backend = backend_store_uri or f"sqlite:///{folder / 'mlflow.db'}"
    artifacts = artifacts_destination or str(folder / "artifacts")

    def launcher(port: int) -> tuple[list[str], dict[str, str]]:
        command = [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        return [*command, "--backend-store-uri", backend, "--artifacts-destination", artifacts], dict(env or {})

    with serve(launcher, folder, timeout) as server:
        yield server


@contextmanager
def serve(launcher: Launcher, folder: Path, timeout: float = START_TIMEOUT) -> Iterator[MlflowServer]:
    """Run ``launcher(port)``'s command (an MLflow server on 127.0.0.1:port) in its own process group until
    ``/health`` answers; a server that exits at once (its free port taken meanwhile) gets a new port."""
    folder.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, ATTEMPTS + 1):
        server = _launch(launcher, folder, attempt)
        try:
            if _wait_healthy(server, timeout, last_attempt=attempt == ATTEMPTS):
                break
        except BaseException:
            stop(server.process)
            raise
        stop(server.process)
    try:
        yield server
    finally:
        stop(server.process)


def _launch(launcher: Launcher, folder: Path, attempt: int) -> MlflowServer:
    port = free_port()
    command, added = launcher(port)
    # No background job runner: it is not needed here, and it keeps a folder in /dev/shm.
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **added}
    environment["PATH"] = f"{MLFLOW.parent}{os.pathsep}{environment.get('PATH', '')}"  # scripts find this mlflow
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


def postgres_binaries() -> Path | None:
    """The folder of PostgreSQL's server programs (initdb, pg_ctl), or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    installed = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))  # Debian keeps them off PATH
    return installed[-1].parent if installed else None


@contextmanager
def local_postgres(user: str, password: str, database: str, timeout: int = 60) -> Iterator[int]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (a free port; password auth over TCP) holding ``database``
    owned by ``user``; yields its port. Stopped and deleted after. As root, the server runs as ``postgres``."""
    programs = postgres_binaries()
    assert programs is not None, "PostgreSQL is not installed"
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="segpipe-postgres-"))  # not under pytest's 0700 folders: postgres reads it
    data, port = root / "data", free_port()
    try:
        (root / "password").write_text(password)
        if as_owner:
            for path in (root, root / "password"):
                shutil.chown(path, "postgres")
        initdb = [str(programs / "initdb"), "-D", str(data), "-U", user, "--pwfile", str(root / "password")]
        _run([*as_owner, *initdb, "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8"])
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"
        pg_ctl = [*as_owner, str(programs / "pg_ctl"), "-D", str(data), "-w", "-t", str(timeout)]
        _run([*pg_ctl, "-o", options, "-l", str(root / "server.log"), "start"])
        try:
            env = {**os.environ, "PGPASSWORD": password}
            _run([str(programs / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, database], env)
            yield port
        finally:
            subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(command: list[str], env: Mapping[str, str] | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False, timeout=120)
    assert done.returncode == 0, f"{command[0]} exited with {done.returncode}: {done.stderr.strip()[-2000:]}"


def listening_addresses(port: int) -> set[str]:
    """The local addresses (IPv4 dotted, IPv6 hex) with a TCP socket listening on ``port``, from /proc/net."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(_address(address))
    return found


def _address(hex_address: str) -> str:
    if len(hex_address) == 8:  # IPv4, little-endian
        return ".".join(str(int(hex_address[i : i + 2], 16)) for i in (6, 4, 2, 0))
    return hex_address


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
