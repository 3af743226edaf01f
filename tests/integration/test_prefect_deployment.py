"""The nightly deployment as a team runs it, on a real Prefect server on loopback: infra/prefect/server.sh (its own
PREFECT_HOME), work-pool.sh (a process pool with a unique name), deploy.sh (the real ``prefect deploy`` on
prefect.yaml, pool and parameters overridden on the command line), a flow run triggered through the API, and
worker.sh --run-once taking it; the masks equal a direct run's. ``python -m flows.serve`` is checked the same way.

Every client call and subprocess here talks to this server: subprocesses get an environment with no PREFECT_*
variable but ours, and the test's own client calls run under ``temporary_settings`` (the session's other tests
keep their ``prefect_test_harness``). Every process started here is killed, with its process group and
descendants, in ``finally``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import zarr

from flows.nightly import nightly
from segpipe.synthetic import write_sample

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "infra" / "prefect"
DEPLOYMENT = "segment-nightly/segment-nightly"
SERVER_START_TIMEOUT = 240  # the first database migration takes over a minute on a busy machine
RUN_TIMEOUT = 300
PARAMETERS: dict[str, Any] = {
    "truth_pattern": "{dir}/{stem}_truth.tif",
    "cluster": "local",
    "workers": 1,
    "chunk": 128,
    "settings": {"tiling": {"tile": 128}, "inference": {"batch_size": 4}},
}


@dataclass
class Server:
    """A ``prefect server start`` subprocess and the environment every process that talks to it gets."""

    api: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log: Path
    ready: bool = False


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _environment(home: Path, port: int) -> dict[str, str]:
    """This process's environment without any PREFECT_* variable (the session's test harness sets some), plus
    the server's address, its own PREFECT_HOME and the repository's profiles."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    return {
        **env,
        "PREFECT_HOME": str(home),
        "SEGPIPE_PREFECT_HOME": str(home),
        "PREFECT_PROFILES_PATH": str(SCRIPTS / "profiles.toml"),
        "PREFECT_PROFILE": "segpipe-server",
        "PREFECT_SERVER_PORT": str(port),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",  # flows.serve picks up a triggered run within seconds
        "DASK_CONFIG": str(REPO / "infra" / "dask"),
    }


def _start(command: list[str], env: dict[str, str], log: Path, cwd: Path = REPO) -> subprocess.Popen[bytes]:
    """A subprocess leading its own process group, its output in ``log``."""
    with log.open("ab") as output:
        return subprocess.Popen(
            command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group (SIGKILL after 20 s), then any descendant that left the group; reap them all."""
    try:
        family = [process.pid, *(child.pid for child in psutil.Process(process.pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        family = [process.pid]
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    for pid in family[1:]:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    gone, alive = psutil.wait_procs([p for p in map(_existing, family) if p is not None], timeout=10)
    assert not alive, f"processes left behind: {[p.pid for p in alive]}"


def _existing(pid: int) -> psutil.Process | None:
    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else process
    except psutil.NoSuchProcess:
        return None


def _tail(log: Path, characters: int = 4000) -> str:
    return log.read_text(errors="replace")[-characters:] if log.exists() else ""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """infra/prefect/server.sh on a free loopback port, state in a temporary PREFECT_HOME; started, not awaited
    (``_wait_ready``), so a test can do other work while its database is created."""
    root = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
    env = _environment(root / "home", port)
    server_env = {**env, "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
    log = root / "server.log"  # no scheduler service: the deployment's 02:00 schedule makes no run here
    process = _start(["bash", str(SCRIPTS / "server.sh")], server_env, log)
    try:
        yield Server(env["PREFECT_API_URL"], env, process, log)
    finally:
        _stop(process)


def _wait_ready(server: Server) -> None:
    """Poll the server's health endpoint until it answers, for at most SERVER_START_TIMEOUT seconds."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while not server.ready:
        assert server.process.poll() is None, (
            f"prefect server exited ({server.process.returncode}):\n{_tail(server.log)}"
        )
        assert time.monotonic() < deadline, f"no healthy server after {SERVER_START_TIMEOUT} s:\n{_tail(server.log)}"
        try:
            with urllib.request.urlopen(f"{server.api}/health", timeout=5) as answer:
                server.ready = answer.status == 200 and json.loads(answer.read()) is True
        except OSError:
            time.sleep(0.5)


def _run(command: list[str], env: dict[str, str], log: Path, timeout: float = 120) -> None:
    """Run a command to completion in ``env``, failing with its output."""
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    log.write_text(done.stdout + done.stderr)
    assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{(done.stdout + done.stderr)[-4000:]}"


@contextmanager
def _api(server: Server) -> Iterator[Any]:
    """A Prefect client for this server; PREFECT_API_URL is restored (to the session's harness) on exit."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    before = PREFECT_API_URL.value()
    with temporary_settings(updates={PREFECT_API_URL: server.api}), get_client(sync_client=True) as client:
        yield client
    assert PREFECT_API_URL.value() == before


def _trigger(server: Server, name: str) -> Any:
    """Start a run of deployment ``name`` through the API (``run_deployment``, not waiting); its id."""
    from prefect.deployments import run_deployment

    with _api(server):
        flow_run = run_deployment(name, timeout=0)
    return flow_run.id  # type: ignore[union-attr]  # the sync form, called outside an event loop


def _wait_final(server: Server, run_id: Any, runner: subprocess.Popen[bytes], log: Path) -> Any:
    """Poll a flow run to a terminal state while ``runner`` (a worker, a served flow) lives; return the state."""
    deadline = time.monotonic() + RUN_TIMEOUT
    with _api(server) as client:
        while True:
            state = client.read_flow_run(run_id).state
            if state is not None and state.is_final():
                return state
            assert runner.poll() is None, f"{runner.args!r} exited ({runner.returncode}), run {state}:\n{_tail(log)}"
            assert time.monotonic() < deadline, f"flow run still {state} after {RUN_TIMEOUT} s:\n{_tail(log)}"
            time.sleep(1)


def _masks(out: Path) -> dict[str, np.ndarray]:
    return {
        p.name: np.asarray(zarr.open_array(str(p / f"{p.name}.ome.zarr" / "labels" / "mask" / "0"), mode="r")[:])
        for p in sorted(out.iterdir())
        if p.is_dir() and (p / "done.json").exists()
    }


def test_deployed_nightly_run_by_a_worker_equals_a_direct_run(server: Server, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    for seed in range(2):
        write_sample(inputs, 256, seed=seed, name=f"img{seed}")
    direct = nightly(str(inputs), str(tmp_path / "direct"), **PARAMETERS)  # while the server creates its database
    assert direct["nightly"]["counts"]["processed"] == 2
    _wait_ready(server)

    pool = f"segpipe-test-{uuid.uuid4().hex[:8]}"
    env = {**server.env, "SEGPIPE_WORK_POOL": pool}  # read by work-pool.sh and worker.sh
    prefect_yaml = (REPO / "prefect.yaml").read_bytes()
    _run(["bash", str(SCRIPTS / "work-pool.sh")], env, tmp_path / "pool.log")
    params = {**PARAMETERS, "input": str(inputs), "out": str(tmp_path / "deployed")}
    deploy = [
        "bash",
        str(SCRIPTS / "deploy.sh"),
        "-n",
        "segment-nightly",
        "--pool",
        pool,
        "--params",
        json.dumps(params),
    ]
    _run(deploy, env, tmp_path / "deploy.log", timeout=180)
    assert (REPO / "prefect.yaml").read_bytes() == prefect_yaml  # deploying does not rewrite the file

    with _api(server) as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
    assert deployment.work_pool_name == pool
    assert deployment.parameters == {**deployment.parameters, **params}
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules] == [
        ("0 2 * * *", "UTC", True)
    ]
    assert deployment.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    assert deployment.job_variables == {"env": {"DASK_CONFIG": str(REPO / "infra" / "dask")}}

    run_id = _trigger(server, DEPLOYMENT)  # before the worker starts: --run-once polls once
    worker_log = tmp_path / "worker.log"
    worker = _start(["bash", str(SCRIPTS / "worker.sh"), "--run-once"], env, worker_log, cwd=tmp_path)
    try:
        state = _wait_final(server, run_id, worker, worker_log)
        assert state.is_completed(), f"{state}:\n{_tail(worker_log)}"
        worker.wait(timeout=60)  # --run-once: the worker leaves once its run is over
    finally:
        _stop(worker)

    deployed = _masks(tmp_path / "deployed")
    assert sorted(deployed) == ["img0", "img1"]
    for name, mask in _masks(tmp_path / "direct").items():
        assert np.array_equal(deployed[name], mask), name
    report = json.loads(next((tmp_path / "deployed").glob("nightly-*.json")).read_text())
    assert [(i["name"], i["reason"], i["status"]) for i in report["nightly"]["images"]] == [
        ("img0", "new", "processed"),
        ("img1", "new", "processed"),
    ]


def test_flows_serve_registers_the_schedule_and_runs_the_nightly(server: Server, tmp_path: Path) -> None:
    _wait_ready(server)
    name = f"served-{uuid.uuid4().hex[:8]}"
    (tmp_path / "in").mkdir()  # no images tonight: a run that succeeds and processes nothing
    command = [sys.executable, "-m", "flows.serve", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    command += ["--cron", "30 3 * * *", "--chunk", "256", "--name", name]
    log = tmp_path / "serve.log"
    served = _start(command, server.env, log)
    try:
        deadline = time.monotonic() + 120
        with _api(server) as client:
            while not client.read_deployments(deployment_filter=_named(name)):
                assert served.poll() is None, f"flows.serve exited ({served.returncode}):\n{_tail(log)}"
                assert time.monotonic() < deadline, f"no deployment {name} after 120 s:\n{_tail(log)}"
                time.sleep(0.5)
            deployment = client.read_deployment_by_name(f"segment-nightly/{name}")
        assert [(s.schedule.cron, s.active) for s in deployment.schedules] == [("30 3 * * *", True)]
        assert deployment.parameters == {
            "input": str(tmp_path / "in"),
            "out": str(tmp_path / "out"),
            "chunk": 256,
            "model": "builtin",
            "cluster": "local",
            "experiment": "segpipe-nightly",
        }
        state = _wait_final(server, _trigger(server, f"segment-nightly/{name}"), served, log)
        assert state.is_completed(), f"{state}:\n{_tail(log)}"
    finally:
        _stop(served)
    report = json.loads(next((tmp_path / "out").glob("nightly-*.json")).read_text())
    assert report["nightly"]["images"] == []
    assert report["batch"] is None


def _named(name: str) -> Any:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    return DeploymentFilter(name=DeploymentFilterName(any_=[name]))
