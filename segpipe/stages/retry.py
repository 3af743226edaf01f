"""Stage retries inside an image's one task: a transient fault is tried again, bad input is not.

A transient fault is a dropped connection, a worker lost or a tracking outage; bad input stays bad.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from segpipe.errors import SegpipeError, TrackingError, one_line

P = ParamSpec("P")
R = TypeVar("R")
LOG = logging.getLogger(__name__)


def is_transient(exc: BaseException) -> bool:
    """Whether trying again may succeed: anything but a SegpipeError, and tracking outages."""
    return isinstance(exc, TrackingError) or (isinstance(exc, Exception) and not isinstance(exc, SegpipeError))


def retrying(stage: Callable[P, R], retries: int, delay_seconds: float = 2.0) -> Callable[P, R]:
    """``stage`` run up to ``retries`` more times after a transient fault, ``delay_seconds`` apart.

    Args:
        stage: the stage function; it must be safe to run again (every stage resumes from its ledger).
        retries: how many times to try again.
        delay_seconds: the pause before each new try.

    Returns:
        A function with ``stage``'s signature that raises the last fault when the tries run out.
    """

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(retries + 1):
            try:
                return stage(*args, **kwargs)
            except Exception as exc:
                if attempt == retries or not is_transient(exc):
                    raise
                name = getattr(stage, "__name__", "stage")
                LOG.warning("%s failed (%s); trying again (%d of %d)", name, one_line(exc), attempt + 1, retries)
                time.sleep(delay_seconds)
        raise AssertionError("unreachable: the last try returns or raises")

    return run
