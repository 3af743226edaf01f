"""``cuda``: one single-threaded worker process per visible GPU on this machine, each asking ``GPU=1``.

dask-cuda's LocalCUDACluster when it is importable. It is not installed by default, because its releases pin
older dask/distributed than segpipe does, so the default is an equivalent SpecCluster built here: one Nanny per
GPU with ``CUDA_VISIBLE_DEVICES=<that GPU>`` in its environment (torch then sees it as ``cuda:0``) and
``resources={"GPU": 1}``. It lacks dask-cuda's extras (CPU affinity, device-memory spilling, UCX).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dask
from distributed import Client, Nanny, Scheduler, SpecCluster
from distributed.deploy.cluster import Cluster
from distributed.worker_memory import parse_memory_limit

from segpipe.cluster.local import thread_env
from segpipe.cluster.settings import backend_settings
from segpipe.cluster.spec import ClusterHandle, ClusterSpec
from segpipe.errors import ConfigError

DEFAULTS: dict[str, Any] = {"memory-limit": "auto", "host": "127.0.0.1", "use-dask-cuda": True}
logger = logging.getLogger(__name__)


def visible_gpus() -> list[str]:
    """The GPU ids this process may use.

    ``CUDA_VISIBLE_DEVICES`` read as CUDA does (up to the first empty or negative entry), else
    ``0..torch.cuda.device_count()-1``.
    """
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        import torch

        return [str(index) for index in range(torch.cuda.device_count())]
    devices: list[str] = []
    for entry in (item.strip() for item in listed.split(",")):
        if not entry or entry.startswith("-"):
            break
        devices.append(entry)
    return devices


def chosen_gpus(workers: int | None) -> list[str]:
    """The first ``workers`` visible GPUs (all when None); a one-line ConfigError when there are too few."""
    devices = visible_gpus()
    if not devices:
        raise ConfigError("--cluster cuda: no GPU visible (CUDA_VISIBLE_DEVICES, torch.cuda); use --cluster local")
    if workers is not None and workers > len(devices):
        raise ConfigError(f"--cluster cuda --workers {workers}: only {len(devices)} GPUs visible ({','.join(devices)})")
    return devices[: workers or len(devices)]


def gpu_spec_cluster(devices: list[str], settings: Mapping[str, Any]) -> SpecCluster:
    """A SpecCluster of one single-threaded Nanny per GPU id in ``devices``, each seeing only its own GPU."""
    limit = parse_memory_limit(settings["memory-limit"], 1, total_cores=len(devices), logger=logger)
    workers = {
        f"gpu-{device}": {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "resources": {"GPU": 1},
                "memory_limit": limit,
                "host": settings["host"],
                "env": {**thread_env(len(devices)), "CUDA_VISIBLE_DEVICES": device},
            },
        }
        for device in devices
    }
    http = {"dashboard": False, "dashboard_address": f"{settings['host']}:0"}  # health/metrics routes only
    scheduler = {"cls": Scheduler, "options": {"host": settings["host"], "port": 0, **http}}
    # distributed leaves SpecCluster.__init__ unannotated
    return SpecCluster(  # type: ignore[no-untyped-call]
        workers=workers, scheduler=scheduler, silence_logs=logging.WARNING, name="segpipe-cuda"
    )


def _start(devices: list[str], settings: Mapping[str, Any]) -> Cluster:
    """LocalCUDACluster when dask-cuda is importable (and allowed), else ``gpu_spec_cluster``."""
    try:
        if not settings["use-dask-cuda"]:
            raise ImportError("segpipe.cluster.cuda.use-dask-cuda is false")
        from dask_cuda import LocalCUDACluster
    except ImportError:
        return gpu_spec_cluster(devices, settings)
    # dask_cuda is optional and untyped, so mypy sees Any
    return LocalCUDACluster(  # type: ignore[no-any-return]
        CUDA_VISIBLE_DEVICES=",".join(devices),
        n_workers=len(devices),
        threads_per_worker=1,
        resources={"GPU": 1},
        memory_limit=settings["memory-limit"],
        host=settings["host"],
        dashboard_address=None,
        silence_logs=logging.WARNING,
    )


@contextmanager
def open_cuda(spec: ClusterSpec) -> Iterator[ClusterHandle]:
    """Start one worker per visible GPU (the first ``spec.workers`` GPUs when given)."""
    devices = chosen_gpus(spec.workers)
    settings = backend_settings("cuda", DEFAULTS)
    with dask.config.set({"distributed.worker.daemon": False}):
        # distributed leaves Client.__init__ unannotated
        with _start(devices, settings) as cluster, Client(cluster, set_as_default=False) as client:  # type: ignore[no-untyped-call]
            description = f"{type(cluster).__name__}: one worker per GPU, CUDA_VISIBLE_DEVICES={','.join(devices)}"
            yield ClusterHandle(client, "cuda", len(devices), True, description)
