"""Dask clusters as backends: start or join one, run delayed tasks on it, and give its workers their model.

``open_cluster(ClusterSpec.parse("cuda"))`` picks a backend from ``BACKENDS`` (one module each: local, cuda,
slurm, kubernetes, address); each reads its settings from Dask config ``segpipe.cluster.<kind>``
(infra/dask/segpipe.yaml). This package (with cli and flows) is the only code allowed to import distributed.
"""

from __future__ import annotations

from segpipe.cluster.distributed_executor import distributed_executor
from segpipe.cluster.local import default_workers, local_cluster_options, torch_threads_per_worker
from segpipe.cluster.plugins import ModelPlugin, register_model
from segpipe.cluster.registry import BACKENDS, open_cluster
from segpipe.cluster.spec import ClusterHandle, ClusterSpec

__all__ = [
    "BACKENDS",
    "ClusterHandle",
    "ClusterSpec",
    "ModelPlugin",
    "default_workers",
    "distributed_executor",
    "local_cluster_options",
    "open_cluster",
    "register_model",
    "torch_threads_per_worker",
]
