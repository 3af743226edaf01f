"""Child processes for pure CPU work that holds the GIL, so that a worker's threads run it side by side.

segpipe's local workers are threads of one process (the model is loaded once). rasterio traces polygons without
releasing the GIL, so two threads tracing take as long as one; ``run(fn, *args)`` sends such a function and its
arguments (arrays, pickled) to a child process instead and waits for the result. The children are spawned (never
forked from a process with threads) on first use, as many as the cores this process may use, and kept for its
life; each exits within a second of its parent's death, even by kill -9. With one core, or in a daemonic process
(Dask's nannies start their workers so, and those may not have children), the work runs in the caller. A child
that dies fails the calls it had (the stage's retry runs them again) and the next call starts a new pool.
"""

from __future__ import annotations

import atexit
import importlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

T = TypeVar("T")

PARENT_POLL_SECONDS = 1.0
_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_warmed: ProcessPoolExecutor | None = None


def processes() -> int:
    """The children a pool has: the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a child process (``fn`` a module-level function, its arguments picklable), or here."""
    pool = _current()
    if pool is None:
        return fn(*args)
    try:
        return pool.submit(fn, *args).result()
    except BrokenProcessPool:
        _discard(pool, wait=False)
        raise


def warm(*modules: str) -> None:
    """Start the children now, each importing ``modules``, without waiting: the first ``run`` finds them ready.

    Only the first call in a pool's life does anything; an import that fails there fails again in ``run``.
    """
    global _warmed
    pool = _current()
    with _lock:
        if pool is None or _warmed is pool:
            return
        _warmed = pool
    for _ in range(processes()):
        pool.submit(_import, modules)


def _current() -> ProcessPoolExecutor | None:
    global _pool
    if processes() < 2 or multiprocessing.current_process().daemon:  # a daemon (a Dask nanny's worker) has no children
        return None
    with _lock:
        if _pool is None:
            context = multiprocessing.get_context("spawn")
            _pool = ProcessPoolExecutor(processes(), mp_context=context, initializer=_watch, initargs=(os.getpid(),))
            atexit.register(_discard, _pool)
        return _pool


def _discard(pool: ProcessPoolExecutor, wait: bool = True) -> None:
    """Stop a pool's children; also at exit.

    ``segpipe``'s fast exit skips the hook that would, and multiprocessing's own exit handler would then wait for
    the children forever.
    """
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=wait, cancel_futures=True)


def _import(modules: tuple[str, ...]) -> None:
    for module in modules:
        importlib.import_module(module)


def _watch(parent: int) -> None:
    """In each child: exit once the parent is gone (a killed parent cannot shut its pool down)."""

    def poll() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=poll, name="segpipe-parent-watch", daemon=True).start()
