"""The backends by kind and ``open_cluster``, which picks one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from segpipe.cluster.address import open_address
from segpipe.cluster.cuda import open_cuda
from segpipe.cluster.kubernetes import open_kubernetes
from segpipe.cluster.local import open_local
from segpipe.cluster.slurm import open_slurm
from segpipe.cluster.spec import ClusterHandle, ClusterSpec

Backend = Callable[[ClusterSpec], AbstractContextManager[ClusterHandle]]

BACKENDS: dict[str, Backend] = {
    "local": open_local,
    "cuda": open_cuda,
    "slurm": open_slurm,
    "kubernetes": open_kubernetes,
    "address": open_address,
}


@contextmanager
def open_cluster(spec: ClusterSpec) -> Iterator[ClusterHandle]:
    """Start (or join) the cluster ``spec`` names; on exit close the client and whatever was started."""
    with BACKENDS[spec.kind](spec) as handle:
        yield handle
