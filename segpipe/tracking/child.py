"""The logging process's loop (``python -m segpipe.tracking.child``): ``process.TrackerProcess`` talks to it.

It imports MLflow, opens the store and experiment, then answers one pickled call at a time until its pipe closes.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pickle
import signal
import sys
from collections.abc import Sequence
from typing import IO, Any

from segpipe.errors import TrackingError
from segpipe.tracking.process import CALLS

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """The child's loop: one reply per request until the pipe closes."""
    from segpipe.tracking.mlflow import MlflowTracker

    tracker: MlflowTracker | None = None
    failed: TrackingError | None = None
    while True:
        try:
            method, args = pickle.load(requests)
        except EOFError:
            return
        try:
            if method == "open":
                tracker = MlflowTracker(*args)
                value = None
            elif tracker is None or method not in CALLS:
                raise failed or TrackingError(f"the logging process cannot {method}")
            else:
                value = getattr(tracker, method)(*args)
            reply: tuple[bool, Any] = (True, value)
        except TrackingError as exc:
            failed = exc if method == "open" else failed
            reply = (False, exc)
        except Exception as exc:  # anything else MLflow raises, as the in-process tracker would name it
            reply = (False, TrackingError(f"MLflow: {method} failed ({type(exc).__name__}: {exc})"))
        try:
            pickle.dump(reply, replies)
            replies.flush()
        except BrokenPipeError:  # the run ended (a bad input, say) before it needed MLflow
            return


def die_with(parent: int) -> None:
    """Be killed when ``parent`` (the thread that started this process) ends, on Linux; exit now if it has.

    A run refused for bad input ends at once, and its logging process, still importing MLflow, must not go on
    taking a core from the next command. Elsewhere the closed pipe ends it after the import.
    """
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(0)


def main(argv: Sequence[str]) -> int:
    """``python -m segpipe.tracking.child REQUESTS_FD REPLIES_FD PARENT_PID``."""
    die_with(int(argv[2]))
    for name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)  # as the CLI keeps them in the run's own process
    with contextlib.suppress(Exception):  # the bulk of the work, done before the store is named; faults come later
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
        import mlflow.tracking  # noqa: F401
    requests, replies = os.fdopen(int(argv[0]), "rb"), os.fdopen(int(argv[1]), "wb")
    serve(requests, replies)
    for pipe in (requests, replies):
        with contextlib.suppress(OSError):
            pipe.close()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stderr.flush()
    os._exit(code)  # every reply is sent and every write committed; MLflow's exit hooks (telemetry) cost ~1 s
