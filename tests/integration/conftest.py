"""Real servers and clusters: one Prefect test server per session, one Dask LocalCluster per module, and a Dask
cluster of separate OS processes (scheduler + workers from the `dask` command line) per test that asks for one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile

from segpipe import synthetic
from tests.data import dsb

REPO = Path(__file__).resolve().parents[2]
DATA_CACHE = REPO / ".cache" / "test-data"


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[str]:
    """Prefect's temporary server (SQLite), started once; flows in this session report to it."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[str]:
    """A real LocalCluster of two single-threaded worker processes; yields the scheduler address."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def write_image_pair(directory: Path, name: str, height: int, width: int, seed: int) -> tuple[str, str]:
    """A striped, LZW-compressed uint16 nuclei image of any size and its truth."""
    image, truth = synthetic.render(0, height, 0, width, seed)
    noise = np.random.default_rng(seed).normal(0, 0.02, image.shape)
    pixels = np.clip((image + noise) * 4000 + 100, 0, 65535).astype(np.uint16)
    image_path, truth_path = directory / f"{name}.tif", directory / f"{name}_truth.tif"
    tifffile.imwrite(image_path, pixels, rowsperstrip=64, compression="lzw")
    tifffile.imwrite(truth_path, truth, compression="zlib")
    return str(image_path), str(truth_path)


@pytest.fixture(scope="session")
def real_nuclei() -> tuple[str, str]:
    """stardist 0.9.2's DSB 2018 nuclei image and instance mask, fetched from the package registry once."""
    try:
        image, mask = dsb.dsb_nuclei(DATA_CACHE)
    except dsb.DataUnavailable as exc:
        pytest.skip(f"no package registry reachable: {exc}")
    return str(image), str(mask)


@dataclass(frozen=True)
class ProcessCluster:
    """A scheduler and workers started as separate OS processes with the ``dask`` command line."""

    address: str
    worker_pids: tuple[int, ...]  # each ``dask worker`` (its nanny) leads a process group holding its worker process


@pytest.fixture
def process_cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    """``dask scheduler`` and three ``dask worker`` processes (one thread each) on loopback; all killed after."""
    scheduler_file = tmp_path / "scheduler.json"
    scheduler = ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
    worker = ["worker", "--nworkers", "1", "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"]
    worker += ["--local-directory", str(tmp_path / "dask-workers")]
    env = _dask_env(tmp_path / "dask-config")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(_dask([*scheduler, "--scheduler-file", str(scheduler_file)], env, tmp_path / "scheduler.log"))
        address = _scheduler_address(scheduler_file, processes[0], timeout=60)
        for number in range(3):
            command = [*worker, "--scheduler-file", str(scheduler_file)]
            processes.append(_dask(command, env, tmp_path / f"worker{number}.log"))
        _wait_for_workers(address, 3, timeout=120)
        yield ProcessCluster(address, tuple(process.pid for process in processes[1:]))
    finally:
        for process in reversed(processes):
            _kill_group(process)


def _dask_env(config: Path) -> dict[str, str]:
    """This environment, with a copy of its Dask config directory: the ``dask`` command loads its plugins, and
    dask-kubernetes then writes its default YAML into that directory (infra/dask under scripts/test.sh)."""
    source = os.environ.get("DASK_CONFIG")
    if source and Path(source).is_dir():
        shutil.copytree(source, config)
    config.mkdir(exist_ok=True)
    return {**os.environ, "DASK_CONFIG": str(config), "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}


def _dask(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``dask ARGS`` from this virtualenv in a new session (its own process group), output into ``log``."""
    with log.open("wb") as output:
        command = [str(Path(sys.executable).with_name("dask")), *args]
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _scheduler_address(scheduler_file: Path, process: subprocess.Popen[bytes], timeout: float) -> str:
    """The address the scheduler wrote to its scheduler file."""

    found: dict[str, str] = {}

    def written() -> bool:
        assert process.poll() is None, f"dask scheduler exited with {process.returncode}"
        try:
            found.update(json.loads(scheduler_file.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):  # not yet, or half written
            return False
        return "address" in found

    wait_until(written, timeout, "the scheduler file")
    return found["address"]


def _wait_for_workers(address: str, count: int, timeout: float) -> None:
    from distributed import Client

    with Client(address, set_as_default=False, timeout=timeout) as client:
        client.wait_for_workers(count, timeout=timeout)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group ``process`` leads (no-op once gone) and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.02) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(poll)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` (sqlite store, artifacts served by the server) on a free 127.0.0.1 port, started
    once; yields its URL. Its whole process group is stopped when the session ends."""
    from tests.integration.mlflow_server import start_mlflow_server

    with start_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server.url
