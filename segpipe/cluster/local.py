"""``local``: a LocalCluster on this machine, the CPU default.

By default its workers are threads of this process, one per core, each running one task at a time with one torch
thread. Threads, not processes, because the model's forward pass releases the GIL and this process has imported
torch and resolved the model already: worker processes would each import torch and load the model again, and
pickle every chunk's result across, which costs time and memory (see docs/capacity.md). I/O-bound work (a
near-free model) runs slower on threads because of the GIL. Set ``segpipe.cluster.local.processes: true``
(infra/dask/segpipe.yaml) for worker processes, e.g. for a model that holds the GIL.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask
from distributed import Client, LocalCluster

from segpipe.cluster.settings import backend_settings, keywords
from segpipe.cluster.spec import ClusterHandle, ClusterSpec
from segpipe.errors import SegpipeWarning

DEFAULTS: dict[str, Any] = {
    "threads-per-worker": 1,
    "processes": False,
    "dashboard-address": "127.0.0.1:0",  # None still serves HTTP on :8787, clashing between clusters
    "memory-limit": "auto",
    "worker-profile": False,  # segpipe's key, not LocalCluster's: distributed's statistical profiler (below)
}
OWN_KEYS = ("worker-profile",)
LEGACY_KEY = "segpipe.local-cluster"


def default_workers() -> int:
    """One worker per core; each runs one task at a time."""
    return max(1, os.cpu_count() or 1)


def torch_threads_per_worker(workers: int) -> int:
    """Share the cores between worker processes so torch does not oversubscribe them."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def thread_env(workers: int) -> dict[str, str]:
    """OpenMP/MKL thread counts for each of ``workers`` processes on this machine."""
    threads = str(torch_threads_per_worker(workers))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def local_cluster_options() -> dict[str, Any]:
    """LocalCluster keywords: built-in defaults, overridden by Dask config ``segpipe.cluster.local``."""
    return keywords(local_settings(), exclude=OWN_KEYS)


def local_settings() -> dict[str, Any]:
    """``segpipe.cluster.local`` over the built-in defaults, the legacy key (warned about) in between."""
    legacy = dask.config.get(LEGACY_KEY, default=None) or {}
    if legacy:
        message = f"Dask config {LEGACY_KEY} is now segpipe.cluster.local (infra/dask/segpipe.yaml); using it"
        warnings.warn(message, SegpipeWarning, stacklevel=3)
    return backend_settings("local", dask.config.merge(DEFAULTS, legacy), strict=False)


def worker_config(settings: dict[str, Any]) -> dict[str, Any]:
    """The distributed config the local workers start under, from their ``local_settings``.

    Workers may start processes of their own (torch, codecs). Distributed's statistical profiler (the dashboard's
    Profile tab) is off unless ``segpipe.cluster.local.worker-profile`` is true: every 10 ms it walks every
    thread's stack holding the GIL; off, the infer stage of an 8192^2 image took 31.6 s instead of 32.2 s.
    """
    profile = bool(settings["worker-profile"])
    return {"distributed.worker.daemon": False, "distributed.worker.profile.enabled": profile}


@contextmanager
def open_local(spec: ClusterSpec) -> Iterator[ClusterHandle]:
    """Start a LocalCluster of ``spec.workers`` (default: one per core) single-threaded workers."""
    workers = spec.workers or default_workers()
    logging.getLogger("distributed").setLevel(logging.WARNING)
    settings = local_settings()  # read once: the cluster's keywords and the workers' config
    options = {**keywords(settings, exclude=OWN_KEYS), "n_workers": workers}
    if options.get("processes", True):
        options["env"] = thread_env(workers)  # only processes take it: thread workers share this process's env
    with dask.config.set(worker_config(settings)):
        # distributed leaves LocalCluster.__init__ and Client.__init__ unannotated
        with LocalCluster(**options, silence_logs=logging.WARNING) as cluster:  # type: ignore[no-untyped-call]
            with Client(cluster, set_as_default=False) as client:  # type: ignore[no-untyped-call]
                kind = "processes" if options.get("processes", True) else "threads in this process"
                description = f"LocalCluster of {workers} workers ({kind})"
                yield ClusterHandle(client, "local", workers, False, description)
