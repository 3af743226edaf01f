"""ModelPlugin on a real (in-process) LocalCluster: every worker installs the model once, workers that join later
too; the install function is faked (``segpipe.models.install_model``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from distributed import Client, LocalCluster

from segpipe import models
from segpipe.cluster import ModelPlugin, register_model
from segpipe.models import ModelRef, model_payload

pytestmark = pytest.mark.integration


@pytest.fixture
def installs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, bytes]]:
    """Calls to a fake install_model (threads share this process, so the fake reaches every worker)."""
    calls: list[tuple[Any, bytes]] = []
    lock = threading.Lock()

    def fake_install(ref: Any, payload: bytes) -> None:
        with lock:
            calls.append((ref, payload))

    monkeypatch.setattr(models, "install_model", fake_install, raising=False)
    return calls


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as started:
        yield started


def _wait_for(predicate: Any, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _plugins(client: Client) -> dict[str, list[str]]:
    return client.run(lambda dask_worker: sorted(dask_worker.plugins))  # type: ignore[no-any-return]


def test_every_worker_installs_the_model_once_including_later_ones(
    cluster: LocalCluster, installs: list[tuple[Any, bytes]], builtin_ref: ModelRef
) -> None:
    payload = model_payload(builtin_ref)
    with Client(cluster, set_as_default=False) as client:
        name = register_model(client, builtin_ref, payload)
        assert name == f"segpipe-model-{builtin_ref.sha256[:16]}"
        assert len(installs) == 2
        assert all(call == (builtin_ref, payload) for call in installs)
        assert all(name in names for names in _plugins(client).values())

        cluster.scale(3)
        client.wait_for_workers(3, timeout=30)
        _wait_for(lambda: len(installs) == 3)
        assert all(name in names for names in _plugins(client).values())

        register_model(client, builtin_ref, payload)  # the same model again: nothing is reinstalled
        assert len(installs) == 3


def test_the_plugin_pickles_with_its_model() -> None:
    import pickle

    plugin = pickle.loads(pickle.dumps(ModelPlugin({"sha256": "ab"}, b"weights")))
    assert plugin.model_ref == {"sha256": "ab"}
    assert plugin.payload == b"weights"
