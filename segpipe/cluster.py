"""Dask distributed: start or join a cluster, and an executor that runs delayed tasks on it with progress.

This is the one module (with cli and flows) allowed to import distributed.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dask
from distributed import Client, LocalCluster

from segpipe.inference import Executor

LOCAL_CLUSTER_DEFAULTS: dict[str, Any] = {
    "threads_per_worker": 1,
    "processes": True,
    "dashboard_address": None,
    "memory_limit": "auto",
}


def default_workers() -> int:
    """One worker process per core (2 here); each runs one task at a time."""
    return max(1, os.cpu_count() or 1)


def torch_threads_per_worker(workers: int) -> int:
    """Share the cores between worker processes so torch does not oversubscribe them."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


@contextmanager
def dask_client(workers: int, scheduler: str | None = None) -> Iterator[Client]:
    """Join ``scheduler`` if given, else start a LocalCluster of ``workers`` single-threaded processes."""
    if scheduler:
        with Client(scheduler, set_as_default=False) as client:
            yield client
        return
    logging.getLogger("distributed").setLevel(logging.WARNING)
    threads = torch_threads_per_worker(workers)
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    options = {**local_cluster_options(), "n_workers": workers, "env": env, "silence_logs": logging.WARNING}
    with dask.config.set({"distributed.worker.daemon": False}):
        with LocalCluster(**options) as cluster, Client(cluster, set_as_default=False) as client:
            yield client


def local_cluster_options() -> dict[str, Any]:
    """LocalCluster keywords: built-in defaults, overridden by Dask config ``segpipe.local-cluster``
    (infra/dask/segpipe.yaml)."""
    options: dict[str, Any] = dict(LOCAL_CLUSTER_DEFAULTS)
    configured = dask.config.get("segpipe.local-cluster", default={}) or {}
    options.update({key.replace("-", "_"): value for key, value in configured.items()})
    return options


def distributed_executor(client: Client, show_progress: bool = False) -> Executor:
    """An executor that computes delayed tasks on ``client``; a progress bar on stderr when asked."""

    def run(tasks: Sequence[Any], label: str = "") -> list[Any]:
        futures = client.compute(list(tasks))
        if show_progress and len(futures) > 1:
            _progress(futures, label)
        return list(client.gather(futures))

    return run


def _progress(futures: list[Any], label: str, poll_seconds: float = 0.2) -> None:
    """A progress bar on stderr until every future is finished (done, failed or cancelled).

    Polls ``Future.done()`` rather than using ``as_completed``, which needs a default client.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task(f"{label:>8} chunks", total=len(futures))
        while True:
            finished = sum(future.done() for future in futures)
            bar.update(task, completed=finished)
            if finished == len(futures):
                return
            time.sleep(poll_seconds)
