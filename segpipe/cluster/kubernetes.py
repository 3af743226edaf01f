"""``kubernetes``: a DaskCluster resource run by the Dask operator (dask_kubernetes.operator.KubeCluster).

One worker group of GPU pods (``nvidia.com/gpu`` limit), each running a dask-cuda worker that declares ``GPU=1``;
the scheduler pod sits behind the cluster's Service, through which workers (and this client) reach it. The image
must hold segpipe, dask-cuda and a CUDA build of torch.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from distributed import Client

from segpipe.cluster.settings import backend_settings, require, resources_arg, wait_for_first_worker
from segpipe.cluster.spec import ClusterHandle, ClusterSpec

DEFAULTS: dict[str, Any] = {
    "name": "segpipe",
    "namespace": None,
    "image": "segpipe-cuda:0.1.0",
    "workers": 2,
    "wait-seconds": 900,
    "resource-timeout": 300,
    "idle-timeout": 0,
    "env": {},
    "worker": {
        "command": "dask cuda worker",
        "threads": 1,
        "dask-resources": {"GPU": 1},
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
    },
    "scheduler": {
        "service-type": "ClusterIP",
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    },
}


def settings() -> dict[str, Any]:
    """Built-in defaults overridden by Dask config ``segpipe.cluster.kubernetes``."""
    return backend_settings("kubernetes", DEFAULTS)


def worker_command(worker: Mapping[str, Any]) -> list[str]:
    """The worker container's command: the dask-cuda worker, one thread, the declared Dask resources."""
    command = [*shlex.split(worker["command"]), "--nthreads", str(worker["threads"])]
    if worker["dask-resources"]:
        command += ["--resources", resources_arg(worker["dask-resources"])]
    return command


def cluster_spec(config: Mapping[str, Any], workers: int, name: str) -> dict[str, Any]:
    """The DaskCluster resource (a plain dict, made without any Kubernetes API) for ``workers`` GPU workers."""
    operator = require("kubernetes")
    resource: dict[str, Any] = operator.make_cluster_spec(
        name=name,
        image=config["image"],
        n_workers=workers,
        env=dict(config["env"]),
        worker_command=worker_command(config["worker"]),
        scheduler_service_type=config["scheduler"]["service-type"],
        idle_timeout=config["idle-timeout"],
    )
    for role in ("worker", "scheduler"):
        container = resource["spec"][role]["spec"]["containers"][0]
        container["resources"] = {part: _quantities(config[role][part]) for part in ("requests", "limits")}
    return resource


def _quantities(values: Mapping[str, Any]) -> dict[str, str]:
    """Kubernetes quantities as the operator's CRD types them: strings (``1`` -> ``"1"``)."""
    return {name: str(value) for name, value in values.items()}


@contextmanager
def open_kubernetes(spec: ClusterSpec) -> Iterator[ClusterHandle]:
    """Create the DaskCluster (deleted on exit), wait for its first worker (``wait-seconds``), connect."""
    operator = require("kubernetes")
    config = settings()
    workers = spec.workers or config["workers"]
    name = f"{config['name']}-{uuid.uuid4().hex[:8]}"
    resource = cluster_spec(config, workers, name)
    cluster = operator.KubeCluster(
        custom_cluster_spec=resource,
        namespace=config["namespace"],
        resource_timeout=config["resource-timeout"],
        shutdown_on_close=True,
        quiet=True,
    )
    # distributed leaves Client.__init__ unannotated
    with cluster, Client(cluster, set_as_default=False) as client:  # type: ignore[no-untyped-call]
        wait_for_first_worker(client, config["wait-seconds"], f"the pods of DaskCluster {name} (kubectl get pods)")
        gpu = bool(config["worker"]["dask-resources"].get("GPU"))
        description = f"KubeCluster {name} image={config['image']} workers={workers}"
        yield ClusterHandle(client, "kubernetes", workers, gpu, description)
