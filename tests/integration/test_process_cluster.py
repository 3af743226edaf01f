"""A batch on a cluster of separate OS processes (``dask scheduler`` + three ``dask worker``), joined by address:
a worker killed mid-run (SIGKILL, nanny and all) changes nothing in the mask."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from distributed import Client

from flows.segment_batch import segment_batch
from segpipe.synthetic import write_sample
from tests.outputs import file_tree, markers_done

from .conftest import ProcessCluster, wait_until

pytestmark = pytest.mark.integration

SIZE, CHUNK = 1024, 128
CHUNKS = (SIZE // CHUNK) ** 2
KILL_AFTER = 8  # infer chunks marked done (of CHUNKS) before one worker is killed


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    image, truth = write_sample(tmp_path_factory.mktemp("sample"), SIZE, seed=7, name="scene")
    return str(image), str(truth)


def _segment(sample: tuple[str, str], out: Path, cluster: str | None) -> dict[str, Any]:
    """The one call into the flow: on a LocalCluster of two workers when ``cluster`` is None, else by address.

    ``workers=2`` in both cases, so both runs size torch's threads the same way.
    """
    image, truth = sample
    settings = {"out": str(out), "tiling": {"chunk": CHUNK, "tile": CHUNK}, "inference": {"batch_size": 4}}
    return segment_batch([image], [truth], settings, cluster=cluster or "local", workers=2).to_json()


def test_worker_killed_mid_run_on_a_process_cluster_gives_the_local_mask(
    tmp_path: Path, sample: tuple[str, str], process_cluster: ProcessCluster
) -> None:
    reference = _segment(sample, tmp_path / "local", None)
    out = tmp_path / "victim"
    result: dict[str, Any] = {}
    failures: list[BaseException] = []

    def run() -> None:
        try:
            result.update(_segment(sample, out, process_cluster.address))
        except BaseException as exc:  # reported by the assertions below
            failures.append(exc)

    runner = threading.Thread(target=run, name="segment-batch", daemon=True)
    runner.start()
    wait_until(lambda: markers_done(out / "scene", "infer") >= KILL_AFTER or not runner.is_alive(), 240, "infer chunks")
    assert runner.is_alive(), f"the run ended before the kill point: {failures}"
    assert not failures, f"the run failed before the kill point: {failures}"
    os.killpg(process_cluster.worker_pids[0], signal.SIGKILL)  # the whole `dask worker`: nanny and worker process
    done_at_kill = markers_done(out / "scene", "infer")
    runner.join(timeout=300)

    assert not runner.is_alive(), "the flow did not finish within 300 s after a worker was killed"
    assert not failures, failures
    assert not result.get("failures"), result["failures"]
    assert done_at_kill < CHUNKS, "the kill came after inference had finished"
    with Client(process_cluster.address, set_as_default=False) as client:
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2, "the killed worker is gone for good"
    labels = Path("scene") / "scene.ome.zarr" / "labels"
    assert file_tree(out / labels) == file_tree(tmp_path / "local" / labels)
    assert result["images"][0]["iou"] == reference["images"][0]["iou"]
