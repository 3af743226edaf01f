"""``slurm``: dask_jobqueue.SLURMCluster; each batch job runs one worker on one GPU of a GPU partition.

The scheduler runs in this process (on a login node) and the jobs' workers connect back to it, so the address it
binds to (``scheduler-options.host`` or ``interface``) must be reachable from the compute nodes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from distributed import Client

from segpipe.cluster.settings import backend_settings, keywords, parse_resources, require, wait_for_first_worker
from segpipe.cluster.spec import ClusterHandle, ClusterSpec

DEFAULTS: dict[str, Any] = {
    "workers": 2,
    "wait-seconds": 600,
    "queue": "gpu",
    "account": None,
    "cores": 8,
    "processes": 1,
    "memory": "64GB",
    "walltime": "04:00:00",
    "job-name": "segpipe-worker",
    "job-extra-directives": ["--gres=gpu:1"],
    "worker-extra-args": ["--resources", "GPU=1"],
    "job-script-prologue": [],
    "interface": None,
    "scheduler-options": {"host": None, "port": 0, "dashboard-address": None},
    "log-directory": None,
    "local-directory": None,
}
OWN_KEYS = ("workers", "wait-seconds")  # segpipe's; every other key is a SLURMCluster keyword


def settings() -> dict[str, Any]:
    """Built-in defaults overridden by Dask config ``segpipe.cluster.slurm``."""
    return backend_settings("slurm", DEFAULTS, strict=False)


def make_cluster(config: Mapping[str, Any]) -> Any:
    """A SLURMCluster from ``config`` (see ``settings``): its scheduler started, no job submitted yet."""
    jobqueue = require("slurm")
    options = keywords(config, exclude=OWN_KEYS)
    options["scheduler_options"] = keywords(config["scheduler-options"])
    return jobqueue.SLURMCluster(**options)


def gpu_jobs(config: Mapping[str, Any]) -> bool:
    """Whether the workers declare a GPU resource (``worker-extra-args: [--resources, GPU=1]``)."""
    return bool(parse_resources(list(config["worker-extra-args"])).get("GPU"))


@contextmanager
def open_slurm(spec: ClusterSpec) -> Iterator[ClusterHandle]:
    """Submit jobs for ``spec.workers`` workers (default: ``workers``); wait for the first (``wait-seconds``)."""
    config = settings()
    workers = spec.workers or config["workers"]
    # distributed leaves Client.__init__ unannotated
    with make_cluster(config) as cluster, Client(cluster, set_as_default=False) as client:  # type: ignore[no-untyped-call]
        cluster.scale(workers)  # whole jobs of ``processes`` workers each
        wait_for_first_worker(client, config["wait-seconds"], "the jobs (squeue) and their logs")
        where = f"partition={config['queue']} scheduler={cluster.scheduler_address}"
        description = f"SLURMCluster of {workers} workers, {where}"
        yield ClusterHandle(client, "slurm", workers, gpu_jobs(config), description)
