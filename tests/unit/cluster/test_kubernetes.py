"""The Kubernetes backend: the DaskCluster resource made from infra/dask/segpipe.yaml, checked against the Dask
operator's own CRD schema (shipped in dask-kubernetes) without any Kubernetes API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask
import pytest
import yaml

from segpipe.cluster import kubernetes


def _crd_schema() -> dict[str, Any]:
    import dask_kubernetes

    helm = Path(dask_kubernetes.__file__).parent / "operator" / "deployment" / "helm" / "dask-kubernetes-operator"
    crd = helm / "crds" / "daskcluster.yaml"  # the CRD as a cluster installs it, the pod spec schema included
    schema: dict[str, Any] = yaml.safe_load(crd.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.fixture
def resource(infra_config: dict[str, Any]) -> dict[str, Any]:
    return kubernetes.cluster_spec(kubernetes.settings(), workers=3, name="segpipe-test")


def _container(resource: dict[str, Any], role: str) -> dict[str, Any]:
    container: dict[str, Any] = resource["spec"][role]["spec"]["containers"][0]
    return container


def test_workers_are_gpu_pods_running_dask_cuda_workers_that_declare_a_gpu(resource: dict[str, Any]) -> None:
    worker = _container(resource, "worker")
    assert resource["spec"]["worker"]["replicas"] == 3
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker["args"][:3] == ["dask", "cuda", "worker"]
    assert worker["args"][worker["args"].index("--resources") + 1] == "GPU=1"
    assert worker["args"][worker["args"].index("--nthreads") + 1] == "1"
    assert worker["image"] == _container(resource, "scheduler")["image"] == "segpipe-cuda:0.1.0"


def test_the_scheduler_needs_no_gpu_and_sits_behind_the_clusters_service(resource: dict[str, Any]) -> None:
    scheduler = resource["spec"]["scheduler"]
    assert "nvidia.com/gpu" not in _container(resource, "scheduler")["resources"]["limits"]
    assert scheduler["service"]["type"] == "ClusterIP"
    assert scheduler["service"]["selector"] == {
        "dask.org/cluster-name": "segpipe-test",
        "dask.org/component": "scheduler",
    }
    assert {port["port"] for port in scheduler["service"]["ports"]} >= {8786}


def test_the_resource_is_valid_for_the_dask_operator_crd(resource: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    assert resource["apiVersion"] == "kubernetes.dask.org/v1"
    assert resource["kind"] == "DaskCluster"
    jsonschema.validate(resource, _crd_schema())
    broken = {**resource, "spec": {**resource["spec"], "idleTimeout": "never"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _crd_schema())


def test_the_image_and_gpus_are_settings() -> None:
    settings = {"image": "registry.example.org/segpipe:2", "worker": {"limits": {"nvidia.com/gpu": 2}}}
    with dask.config.set({"segpipe.cluster.kubernetes": settings}):
        resource = kubernetes.cluster_spec(kubernetes.settings(), workers=1, name="x")
    worker = _container(resource, "worker")
    assert worker["image"] == "registry.example.org/segpipe:2"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "2"  # a string, as the CRD wants
