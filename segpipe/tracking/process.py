"""MLflow in a child process, so its import and store open do not hold the run's own interpreter.

Importing MLflow and opening its store cost a run about 2 s of CPU, and in a background thread they held the GIL
the images needed. ``TrackerProcess`` is a ``Tracker`` whose ``MlflowTracker`` lives in a child process
(``python -m segpipe.tracking.child``): the child imports MLflow and opens the store on another core while the
images compute; then each tracker call crosses a pipe as a pickle of plain values (params, metrics, paths), and a
fault comes back as the same ``TrackingError`` an in-process tracker raises. The child ends when its pipe closes,
so it never outlives the run. The tracking URI (which may carry credentials) goes through the pipe, never argv.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import IO, Any

from segpipe.errors import TrackingError
from segpipe.storage.urls import public_url
from segpipe.tracking.mlflow import MlflowTracker, Tracker

CLOSE_WAIT_SECONDS = 10.0
CALLS = ("start_batch", "log_images", "log_metrics", "log_artifact", "log_artifacts", "end")


class TrackerProcess:
    """A ``Tracker`` whose MLflow calls run in a child process, once ``open`` named the store and experiment."""

    def __init__(self) -> None:
        """Start the child, which imports MLflow at once; ``open`` tells it which store to open."""
        self.tracking_uri = ""
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        pipes = [str(requests_read), str(replies_write)]
        command = [sys.executable, "-m", "segpipe.tracking.child", *pipes, str(os.getpid())]
        self.process = subprocess.Popen(
            command, pass_fds=(requests_read, replies_write), stdin=subprocess.DEVNULL, stdout=_stderr_or_null()
        )
        os.close(requests_read)
        os.close(replies_write)
        self._requests: IO[bytes] = os.fdopen(requests_write, "wb")
        self._replies: IO[bytes] = os.fdopen(replies_read, "rb")
        self._lock = threading.Lock()
        self._opened = False

    def open(self, tracking_uri: str, experiment: str) -> None:
        """Ask the child to open the store and experiment (its answer, or fault, comes at the first call)."""
        self.tracking_uri = public_url(tracking_uri)
        self._send(("open", (tracking_uri, experiment)))

    def alive(self) -> bool:
        """Whether the child is still running."""
        return self.process.poll() is None

    def start_batch(self, params: dict[str, Any], tags: dict[str, str], metrics: dict[str, float] | None = None) -> str:
        """Start the batch's parent run in the child; return its id."""
        return str(self._call("start_batch", params, tags, metrics))

    def log_images(self, runs: Sequence[Any]) -> list[str]:
        """Log every image's finished run, nested in the batch run; return their ids in order."""
        return list(self._call("log_images", list(runs)))

    def log_metrics(self, run_id: str, values: dict[str, float]) -> None:
        """Log ``values`` on run ``run_id``."""
        self._call("log_metrics", run_id, values)

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> None:
        """Upload the file ``path`` to the run's artifacts, under ``artifact_path``."""
        self._call("log_artifact", run_id, path, artifact_path)

    def log_artifacts(self, run_id: str, directory: str, artifact_path: str) -> None:
        """Upload what is below ``directory`` to the run's artifacts, under ``artifact_path``."""
        self._call("log_artifacts", run_id, directory, artifact_path)

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        """End run ``run_id`` with ``status``."""
        self._call("end", run_id, status)

    def close(self) -> None:
        """Close the pipe (the child then exits) and reap the child; kill it if it does not exit in time."""
        with contextlib.suppress(OSError):
            self._requests.close()
        try:
            self.process.wait(timeout=CLOSE_WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._replies.close()

    def _call(self, method: str, *args: Any) -> Any:
        with self._lock:
            if not self._opened:
                self._opened = True
                self._receive()  # the store and experiment, opened meanwhile, or why not
            self._send((method, args))
            return self._receive()

    def _send(self, message: tuple[str, tuple[Any, ...]]) -> None:
        try:
            pickle.dump(message, self._requests)
            self._requests.flush()
        except (OSError, ValueError):
            raise self._gone() from None

    def _receive(self) -> Any:
        try:
            ok, value = pickle.load(self._replies)
        except (EOFError, OSError, ValueError, pickle.UnpicklingError):
            raise self._gone() from None
        if not ok:
            raise value
        return value

    def _gone(self) -> TrackingError:
        code = self.process.poll()
        state = "is not answering" if code is None else f"exited with code {code}"
        return TrackingError(f"MLflow at {self.tracking_uri}: the logging process {state}")


def _stderr_or_null() -> int:
    """The child's stdout: this process's stderr (MLflow may print), never stdout, which ``--json`` owns."""
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return subprocess.DEVNULL


_STARTED: dict[tuple[str, str], TrackerProcess] = {}  # (URI, experiment) -> its logging process, until handed over
_SPARE: list[TrackerProcess] = []  # a process importing MLflow, not yet told which store to open


def start_importing() -> None:
    """Start a logging process now, before any store is named: it imports MLflow while this process imports torch.

    The next ``warm_up`` takes it. It opens no store until then, so a run refused for bad input writes nothing.
    """
    if not _SPARE:
        _SPARE.append(TrackerProcess())


def warm_up(tracking_uri: str, experiment: str) -> None:
    """Have a logging process open ``tracking_uri`` now, so MLflow's import and store open overlap the images.

    Otherwise they take about 2 s of CPU from a small run's own interpreter. ``tracker_for`` hands the process over;
    ``discard_warm_up`` ends it when nothing was logged. Errors are left for the first call to report.
    """
    key = (tracking_uri, experiment)
    if key not in _STARTED:
        spare = _SPARE.pop() if _SPARE else None
        if spare is not None and not spare.alive():
            spare.close()
        process = spare if spare is not None and spare.alive() else TrackerProcess()
        process.open(tracking_uri, experiment)
        _STARTED[key] = process


@contextlib.contextmanager
def tracker_for(tracking_uri: str, experiment: str) -> Iterator[Tracker]:
    """The process ``warm_up`` started for these (handed over once), else an ``MlflowTracker`` in this process."""
    started = _STARTED.pop((tracking_uri, experiment), None)
    if started is None or not started.alive():
        if started is not None:
            started.close()
        yield MlflowTracker(tracking_uri, experiment)
        return
    try:
        yield started
    finally:
        started.close()


def discard_warm_up(tracking_uri: str, experiment: str) -> None:
    """End the logging process ``warm_up`` started, if no tracker took it."""
    started = _STARTED.pop((tracking_uri, experiment), None)
    if started is not None:
        started.close()
