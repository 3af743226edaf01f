"""What the process needs around a command: fewer malloc arenas, and quiet logs from Prefect's and MLflow's services."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

MALLOC_ARENAS = 2  # glibc allows 8 per core, and memory freed in one stays there


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for the threads this process starts (its Dask workers are threads).

    Each thread otherwise gets its own arena, whose freed memory stays in the process. No-op without glibc, or when
    ``MALLOC_ARENA_MAX`` is set (glibc read it already). Returns whether the cap was set.
    """
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-8, arenas))  # -8: M_ARENA_MAX in malloc.h
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False


def quiet_service_logs() -> None:
    """Keep the terminal for segpipe's own lines.

    No INFO chatter from Prefect's temporary server or MLflow's database set-up (warnings and errors still show).
    """
    for name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("prefect").addFilter(_DropTemporaryServerLines())


class _DropTemporaryServerLines:
    """A logging filter for Prefect's 'Starting/Stopping temporary server' lines."""

    def filter(self, record: Any) -> bool:
        return "temporary server" not in str(record.msg)
