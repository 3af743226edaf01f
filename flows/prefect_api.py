"""A temporary Prefect API server started early, so its start-up overlaps the run's own.

With no ``PREFECT_API_URL`` configured, Prefect starts a temporary server the moment a flow begins and waits for
it (importing the whole server into the client first): 3-5 s on every ``segpipe run`` before the first pixel. The
CLI instead starts the same server (Prefect's ``create_app`` under uvicorn, on a free loopback port, as Prefect
does) as soon as the inputs are known to be readable, plans the run (loading torch and the model) while it comes
up, and points the flow at it. A configured API (a team server, a deployment's worker) is used as it is.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import tomllib

from segpipe.errors import SegpipeError

START_ATTEMPTS = 3  # a free port taken by someone else before uvicorn binds it: try another


class PrefectStartError(SegpipeError):
    """The temporary Prefect server did not come up."""


@dataclass
class TemporaryServer:
    """A Prefect API server process on ``127.0.0.1:port``, owned by this process."""

    process: subprocess.Popen[bytes]
    port: int
    log: IO[bytes]  # the server's stderr (a pipe could fill and block it)

    @property
    def api_url(self) -> str:
        """The server's API URL."""
        return f"http://127.0.0.1:{self.port}/api"

    def healthy(self) -> bool:
        """Whether the server answers ``/health`` with 200 within 2 s."""
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def last_error_line(self) -> str:
        """The last line the server wrote to its log, or ``no output``."""
        self.log.seek(0)
        lines = self.log.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no output"

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s) and reap it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def configured_api_url() -> str | None:
    """The Prefect API this process would use (environment, profile or settings file), or None."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def api_url_hint() -> str | None:
    """A quick look, without importing Prefect (0.6 s), for a configured API.

    That is ``PREFECT_API_URL`` where Prefect's settings sources would find it: the environment, a ``.env`` file,
    ``prefect.toml`` (``[api] url``) or ``pyproject.toml`` (``[tool.prefect.api] url``) in the working directory, or
    the active profile. ``configured_api_url`` has the final word before the flow starts.
    """
    return (
        os.environ.get("PREFECT_API_URL")
        or _dotenv_api_url(Path(".env"))
        or _toml_value(Path("prefect.toml"), ("api", "url"))
        or _toml_value(Path("pyproject.toml"), ("tool", "prefect", "api", "url"))
        or _profile_api_url()
    )


def uses_prefect(choice: str) -> bool:
    """Whether ``--prefect CHOICE`` runs the batch as a Prefect flow: ``on``, or ``auto`` with an API configured.

    With none configured, Prefect would start a temporary server (about 4 s of CPU) only to record a run no lasting
    server shows; ``auto`` then runs the same steps in process.
    """
    return choice == "on" or (choice == "auto" and api_url_hint() is not None)


def _dotenv_api_url(path: Path) -> str | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.removeprefix("export ").partition("=")
        if name.strip() == "PREFECT_API_URL" and value.strip():
            return value.strip().strip("'\"")
    return None


def _toml_value(path: Path, keys: tuple[str, ...]) -> str | None:
    try:
        table: object = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    for key in keys:
        table = table.get(key) if isinstance(table, dict) else None
    return table if isinstance(table, str) and table else None


def _profile_api_url() -> str | None:
    path = Path(
        os.environ.get("PREFECT_PROFILES_PATH") or Path(os.environ.get("PREFECT_HOME", "~/.prefect")) / "profiles.toml"
    )
    try:
        profiles = tomllib.loads(path.expanduser().read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    url = (profiles.get("profiles", {}).get(active) or {}).get("PREFECT_API_URL")
    return url if isinstance(url, str) and url else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS reports free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_server() -> TemporaryServer:
    """Start the server process without waiting for it.

    It is Prefect's own temporary-server command; the server reads the same environment and profile as this process.
    Prefect itself is not imported here.
    """
    spec = importlib.util.find_spec("prefect")
    if spec is None or spec.origin is None:
        raise PrefectStartError("prefect is not installed")
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).parent.parent), "--factory",
        "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "error", "--lifespan", "on",
    ]  # fmt: skip
    env = {
        **os.environ,
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    log = tempfile.TemporaryFile(prefix="segpipe-prefect-")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
    return TemporaryServer(process, port, log)


def wait_until_healthy(server: TemporaryServer, timeout: float) -> TemporaryServer:
    """``server`` once its health endpoint answers, or a new one if it lost its port; raises if none comes up."""
    for _ in range(START_ATTEMPTS):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.healthy():
                return server
            if server.process.poll() is not None:
                break
            time.sleep(0.05)
        else:
            server.stop()
            raise PrefectStartError(f"the temporary Prefect server did not answer within {timeout:.0f} s")
        error = server.last_error_line()
        server.stop()
        if "address already in use" not in error.lower():
            raise PrefectStartError(f"the temporary Prefect server exited: {error}")
        server = launch_server()
    raise PrefectStartError("the temporary Prefect server found no free port")


class EarlyPrefect:
    """A temporary Prefect API server for one flow call, started only when no API is configured.

    ``start()`` launches a temporary server when no API is configured; ``api()`` waits for it and points Prefect at it
    for the flow call; ``stop()`` ends it.
    """

    def __init__(self, enabled: bool = True) -> None:
        """Start with no server; ``start()`` launches one when needed. Disabled: Prefect is not used at all."""
        self.enabled = enabled
        self.server: TemporaryServer | None = None

    def start(self) -> None:
        """Launch a temporary server, unless disabled, launched already or an API is configured."""
        if self.enabled and self.server is None and api_url_hint() is None:
            self.server = launch_server()

    @contextmanager
    def api(self) -> Iterator[str | None]:
        """Within: Prefect talks to the temporary server (if one was started). Yields its URL or None."""
        if not self.enabled:
            yield None
            return
        if self.server is not None and configured_api_url() is not None:  # configured where the hint missed it
            self.stop()
        if self.server is None:
            yield None
            return
        from prefect.settings import (
            PREFECT_API_URL,
            PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
            temporary_settings,
        )

        self.server = wait_until_healthy(self.server, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
        no_links = DropLinksTo(self.server.api_url.removesuffix("/api"))
        flow_runs = logging.getLogger("prefect.flow_runs")
        flow_runs.addFilter(no_links)
        # No heartbeats: they let a lasting server mark a crashed run, and this one stops with the process. Prefect's
        # heartbeat thread sleeps in 1 s steps, so the flow's exit waited up to 1 s for it to notice the end.
        updates = {PREFECT_API_URL: self.server.api_url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
        with temporary_settings(updates=updates):
            try:
                yield self.server.api_url
            finally:
                drain_prefect_workers()
                flow_runs.removeFilter(no_links)

    def stop(self) -> None:
        """Stop the temporary server, if one was started."""
        if self.server is not None:
            self.server.stop()
            self.server = None


class DropLinksTo(logging.Filter):
    """Drops Prefect's 'View at <url>' lines for a server that serves no UI (the temporary one)."""

    def __init__(self, address: str) -> None:
        """Filter out the 'View at' lines that link to the server at ``address``."""
        super().__init__()
        self.address = address

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop the record) for a 'View at <address>' line."""
        return not str(record.msg).startswith(f"View at {self.address}")


def drain_prefect_workers(timeout: float = 5.0) -> None:
    """Send the logs and events Prefect still queues while the server is up.

    Its workers would otherwise retry a stopped server for over a minute at exit, as Prefect's own test harness also
    avoids.
    """
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout)
    EventsWorker.drain_all(timeout=timeout)


@contextmanager
def early_prefect(enabled: bool = True) -> Iterator[EarlyPrefect]:
    """An ``EarlyPrefect`` whose server, if it started one, is stopped on the way out (errors included)."""
    early = EarlyPrefect(enabled)
    try:
        yield early
    finally:
        early.stop()
