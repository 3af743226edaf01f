"""A real headless Chromium driven over the Chrome DevTools protocol: open a page, collect its errors, evaluate.

Errors are what a person would see in the console: uncaught exceptions (``Runtime.exceptionThrown``),
``console.error`` calls and browser log entries of level error (``Log.entryAdded``: a resource that failed to load,
a blocked request).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str | None:
    """The Chromium executable on PATH, or None."""
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


def version(executable: str) -> str:
    """``chromium --version``'s line."""
    return subprocess.run([executable, "--version"], capture_output=True, text=True, check=True).stdout.strip()


@dataclass
class Page:
    """One tab of the browser over its DevTools websocket."""

    socket: websocket.WebSocket
    errors: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    _next_id: int = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer, keeping every event that arrives meanwhile."""
        self._next_id += 1
        self.socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self._event(message)

    def wait_for(self, method: str, timeout: float = 30.0) -> None:
        """Read events until ``method`` arrives."""
        deadline = time.monotonic() + timeout
        while not any(e["method"] == method for e in self.events):
            self.socket.settimeout(max(0.1, deadline - time.monotonic()))
            self._event(json.loads(self.socket.recv()))

    def drain(self, seconds: float = 0.5) -> None:
        """Read the events that arrive within ``seconds`` (log entries may follow the load event)."""
        self.socket.settimeout(seconds)
        try:
            while True:
                self._event(json.loads(self.socket.recv()))
        except websocket.WebSocketTimeoutException:
            pass
        finally:
            self.socket.settimeout(30)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (returned by value)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        """Navigate to ``url`` and wait for its load event."""
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        self.drain()

    def _event(self, message: dict[str, Any]) -> None:
        if "method" not in message:
            return
        self.events.append(message)
        params = message.get("params", {})
        if message["method"] == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(f"{details.get('text')} {details.get('exception', {}).get('description', '')}".strip())
        elif message["method"] == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(f"console.error: {[a.get('value') for a in params.get('args', [])]}")
        elif message["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}".strip())


@contextmanager
def headless_page(executable: str, timeout: float = 30.0) -> Iterator[Page]:
    """A headless Chromium with one blank tab; errors and events are collected from the start."""
    with tempfile.TemporaryDirectory(prefix="segpipe-chromium-") as profile:
        process = subprocess.Popen(
            [
                executable,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port = _devtools_port(Path(profile), process, timeout)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as answer:
                targets = json.load(answer)
            target = next(t for t in targets if t["type"] == "page")
            socket = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True)
            try:
                page = Page(socket)
                for domain in ("Page", "Runtime", "Log"):
                    page.call(f"{domain}.enable")
                yield page
            finally:
                socket.close()
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _devtools_port(profile: Path, process: subprocess.Popen[bytes], timeout: float) -> int:
    """The port Chromium chose, from the ``DevToolsActivePort`` file it writes in its profile."""
    deadline = time.monotonic() + timeout
    marker = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode} before it listened")
        if marker.exists() and (lines := marker.read_text().splitlines()):
            return int(lines[0])
        time.sleep(0.1)
    raise TimeoutError(f"chromium did not listen within {timeout} s")
