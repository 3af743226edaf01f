"""``tcp://HOST:PORT`` / ``tls://HOST:PORT``: join a running scheduler (its workers already started elsewhere)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from distributed import Client

from segpipe.cluster.spec import ClusterHandle, ClusterSpec
from segpipe.storage.urls import public_url


@contextmanager
def open_address(spec: ClusterSpec) -> Iterator[ClusterHandle]:
    """Connect to the scheduler at ``spec.address``; GPU tasks when any worker there declares a ``GPU`` resource.

    TLS certificates come from Dask config (``distributed.comm.tls.*``), as for any Dask client.
    """
    if spec.address is None:
        raise ValueError("open_address needs a ClusterSpec of kind 'address'")
    # distributed leaves Client.__init__ unannotated
    with Client(spec.address, set_as_default=False) as client:  # type: ignore[no-untyped-call]
        workers = client.scheduler_info(n_workers=-1)["workers"]
        gpu = any(info.get("resources", {}).get("GPU") for info in workers.values())
        description = f"scheduler {public_url(spec.address)} ({len(workers)} workers at start)"
        yield ClusterHandle(client, "address", len(workers), gpu, description)
