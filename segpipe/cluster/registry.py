"""The backends by kind, ``open_cluster`` that picks one, and ``dask_client`` (a client from a worker count)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from distributed import Client

from segpipe.cluster.address import open_address
from segpipe.cluster.cuda import open_cuda
from segpipe.cluster.kubernetes import open_kubernetes
from segpipe.cluster.local import open_local
from segpipe.cluster.slurm import open_slurm
from segpipe.cluster.spec import KINDS, ClusterHandle, ClusterSpec

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


@contextmanager
def dask_client(workers: int, scheduler: str | None = None) -> Iterator[Client]:
    """Join ``scheduler`` if given, else start a LocalCluster of ``workers`` single-threaded workers.

    ``scheduler`` may also be a cluster kind (``cuda``, ``slurm``, ...); ``HOST:PORT`` means ``tcp://HOST:PORT``.
    """
    text = scheduler or "local"
    if "://" not in text and text.strip().lower() not in KINDS:
        text = f"tcp://{text}"  # Dask's default protocol, as Client("HOST:PORT") assumes
    with open_cluster(ClusterSpec.parse(text, workers)) as handle:
        yield handle.client
