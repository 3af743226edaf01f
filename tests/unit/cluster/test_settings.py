"""Backend settings: built-in defaults, Dask config overrides, unknown keys, the legacy local-cluster key."""

from __future__ import annotations

from typing import Any

import dask
import pytest

from segpipe.cluster import ClusterSpec, cuda, kubernetes, local, local_cluster_options, slurm
from segpipe.cluster.settings import parse_resources, resources_arg
from segpipe.errors import ConfigError, SegpipeWarning


def test_without_config_the_built_in_defaults_apply() -> None:
    with dask.config.set(segpipe={}):
        assert local_cluster_options() == {
            "threads_per_worker": 1,
            "processes": False,
            "dashboard_address": "127.0.0.1:0",
            "memory_limit": "auto",
        }
        assert kubernetes.settings() == kubernetes.DEFAULTS


def test_dask_config_overrides_nested_keys_and_keeps_the_rest() -> None:
    with dask.config.set({"segpipe.cluster.kubernetes.worker.limits": {"nvidia.com/gpu": "2"}}):
        worker = kubernetes.settings()["worker"]
    assert worker["limits"] == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "2"}
    assert worker["command"] == "dask cuda worker"


def test_unknown_keys_are_refused_where_segpipe_owns_the_keys() -> None:
    with dask.config.set({"segpipe.cluster.kubernetes.imag": "x"}):
        with pytest.raises(ConfigError, match=r"segpipe.cluster.kubernetes: unknown keys \['imag'\]"):
            kubernetes.settings()


def test_local_and_slurm_pass_other_keys_to_their_cluster_class() -> None:
    with dask.config.set({"segpipe.cluster.local.protocol": "tcp", "segpipe.cluster.slurm.shebang": "#!/bin/sh"}):
        assert local_cluster_options()["protocol"] == "tcp"
        assert slurm.settings()["shebang"] == "#!/bin/sh"


def test_the_legacy_local_cluster_key_still_applies_with_a_warning() -> None:
    with dask.config.set(segpipe={"local-cluster": {"memory-limit": "1GiB", "processes": False}}):
        with pytest.warns(SegpipeWarning, match="is now segpipe.cluster.local"):
            assert local_cluster_options()["memory_limit"] == "1GiB"
    both = {"local-cluster": {"memory-limit": "1GiB", "processes": False}, "cluster": {"local": {"processes": True}}}
    with dask.config.set(segpipe=both), pytest.warns(SegpipeWarning):
        options = local_cluster_options()
    assert options["processes"] is True
    assert options["memory_limit"] == "1GiB"  # the new key wins where both say


@pytest.mark.parametrize("module", [local, cuda, slurm, kubernetes])
def test_the_infra_file_only_uses_keys_segpipe_knows(infra_config: dict[str, Any], module: Any) -> None:
    kind = module.__name__.rsplit(".", 1)[-1]
    configured = infra_config["segpipe"]["cluster"][kind]
    assert set(configured) <= set(module.DEFAULTS), "a key in infra/dask/segpipe.yaml that segpipe does not know"


def test_resources_render_and_parse_back() -> None:
    assert resources_arg({"GPU": 1, "MEM": 1e9}) == "GPU=1 MEM=1e+09"
    assert parse_resources(["--nthreads", "1", "--resources", "GPU=1 MEM=1e+09"]) == {"GPU": 1.0, "MEM": 1e9}
    assert parse_resources(["--resources", "GPU=2,FPGA=1"]) == {"GPU": 2.0, "FPGA": 1.0}
    assert parse_resources(["--nthreads", "8"]) == {}


def test_the_local_cluster_runs_its_workers_in_this_process() -> None:
    import os

    from segpipe.cluster import ClusterSpec, open_cluster

    with dask.config.set(segpipe={}), open_cluster(ClusterSpec.parse("local", 2)) as handle:
        pids = handle.client.run(os.getpid)
        assert len(pids) == 2
        assert set(pids.values()) == {os.getpid()}
        assert "threads in this process" in handle.description


def _profiling(handle: Any) -> list[bool]:
    """Whether each worker of the cluster runs distributed's statistical profiler."""
    found = handle.client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
    return sorted(found.values())


def test_local_workers_start_without_the_statistical_profiler() -> None:
    with local.open_local(ClusterSpec.parse("local", 2)) as handle:
        assert _profiling(handle) == [False, False]


def test_the_profiler_comes_back_when_the_config_asks() -> None:
    with dask.config.set({"segpipe.cluster.local.worker-profile": True}):
        with local.open_local(ClusterSpec.parse("local", 1)) as handle:
            assert _profiling(handle) == [True]
