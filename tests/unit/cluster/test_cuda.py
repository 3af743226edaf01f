"""The cuda backend without a GPU: GPU ids from CUDA_VISIBLE_DEVICES (faked), one worker per GPU, each seeing only
its own GPU and declaring GPU=1; dask-cuda used when importable."""

from __future__ import annotations

import os
import sys
import types
from typing import Any

import dask
import pytest
from distributed import LocalCluster

from segpipe.cluster import ClusterSpec, distributed_executor, open_cluster
from segpipe.cluster.cuda import chosen_gpus, visible_gpus
from segpipe.errors import ConfigError
from segpipe.executor import task_slots


@pytest.mark.parametrize(
    ("listed", "devices"),
    [("0,1", ["0", "1"]), ("3", ["3"]), (" 2, 0 ", ["2", "0"]), ("", []), ("-1", []), ("0,-1,2", ["0"])],
)
def test_visible_gpus_reads_cuda_visible_devices_as_cuda_does(
    monkeypatch: pytest.MonkeyPatch, listed: str, devices: list[str]
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", listed)
    assert visible_gpus() == devices


def test_without_the_variable_torch_counts_the_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert visible_gpus() == ["0", "1", "2"]


def test_no_gpu_is_a_one_line_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError) as raised:
        with open_cluster(ClusterSpec.parse("cuda")):
            pass
    assert "\n" not in str(raised.value)
    assert "no GPU visible" in str(raised.value)


def test_workers_pick_the_first_gpus_and_never_more_than_there_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    assert chosen_gpus(None) == ["4", "5", "6"]
    assert chosen_gpus(2) == ["4", "5"]
    with pytest.raises(ConfigError, match="--workers 4: only 3 GPUs visible"):
        chosen_gpus(4)


def _cuda_visible_devices() -> str | None:
    """This process's CUDA_VISIBLE_DEVICES, read where it runs. (Not ``os.environ.get`` itself: cloudpickle sends
    that bound method with a copy of the *client's* environment, so workers would report the client's value.)"""
    return os.environ.get("CUDA_VISIBLE_DEVICES")


@pytest.mark.integration
def test_fallback_starts_one_worker_per_gpu_each_seeing_only_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # not installed (the default with our dask pin)
    with open_cluster(ClusterSpec.parse("cuda")) as handle:
        client = handle.client
        seen = client.run(_cuda_visible_devices)
        workers = client.scheduler_info(n_workers=-1)["workers"]
        run = distributed_executor(client, resources=handle.task_resources)
        on_gpu = run([dask.delayed(_cuda_visible_devices, pure=False)() for _ in range(6)], "infer")
        slots = task_slots(run, "infer")
    assert slots == 2  # one infer task per GPU at a time: tasks are grouped for two slots
    assert (handle.kind, handle.workers, handle.gpu) == ("cuda", 2, True)
    assert "SpecCluster" in handle.description
    assert sorted(seen.values()) == ["0", "1"]  # each worker process sees exactly one GPU, its own
    assert [info["resources"] for info in workers.values()] == [{"GPU": 1}, {"GPU": 1}]
    assert [info["nthreads"] for info in workers.values()] == [1, 1]
    assert set(on_gpu) <= {"0", "1"}


@pytest.mark.integration
def test_dask_cuda_is_used_when_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def local_cuda_cluster(**options: Any) -> LocalCluster:
        calls.append(options)
        return LocalCluster(n_workers=1, processes=False, dashboard_address=None)

    monkeypatch.setitem(sys.modules, "dask_cuda", types.SimpleNamespace(LocalCUDACluster=local_cuda_cluster))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with open_cluster(ClusterSpec.parse("cuda")) as handle:
        assert handle.gpu
        assert handle.workers == 2
    assert calls[0]["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert calls[0]["n_workers"] == 2
    assert calls[0]["resources"] == {"GPU": 1}
    assert calls[0]["threads_per_worker"] == 1
