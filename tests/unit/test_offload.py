"""segpipe.offload: GIL-bound work in spawned child processes, which never outlive their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from segpipe import offload
from segpipe.errors import ConfigError
from segpipe.outlines import trace_block

CHILD = """
import os, sys
from segpipe import offload
offload.warm("segpipe.outlines")
print(" ".join(str(offload.run(os.getpid)) for _ in range(4)), flush=True)
sys.stdin.read()
"""


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _raises(message: str) -> None:
    raise ConfigError(message)


def _alive(pid: int) -> bool:
    """Running (a zombie, exited but not yet reaped by whoever adopted it, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offload, "processes", lambda: 2)


def test_work_runs_in_a_child_process_and_gives_what_it_gives_here(two_cores) -> None:
    ids = np.zeros((32, 32), np.uint32)
    ids[2:9, 3:7], ids[20:30, 0:5] = 4, 9
    assert offload.run(os.getpid) != os.getpid()
    assert offload.run(trace_block, ids, (64, 0), 0.0) == trace_block(ids, (64, 0), 0.0)


def test_an_error_in_the_child_is_raised_in_the_caller(two_cores) -> None:
    with pytest.raises(ConfigError, match="bad block"):
        offload.run(_raises, "bad block")


def test_with_one_core_work_runs_in_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offload, "processes", lambda: 1)
    assert offload.run(os.getpid) == os.getpid()


def test_a_dead_child_fails_its_call_and_the_next_call_gets_a_new_pool(two_cores) -> None:
    offload.warm("segpipe.outlines")  # a pool of two children, whichever tests ran before
    before = {offload.run(os.getpid) for _ in range(8)}
    with pytest.raises(offload.BrokenProcessPool):
        offload.run(_die)  # the child that takes it kills itself, as the OOM killer would
    after = offload.run(os.getpid)
    assert after not in before
    assert after != os.getpid()


def test_the_children_exit_when_their_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    children = {int(pid) for pid in parent.stdout.readline().split()}
    assert children
    assert parent.pid not in children
    assert all(_alive(pid) for pid in children)
    parent.kill()  # SIGKILL: the pool is never shut down
    parent.wait()
    deadline = time.monotonic() + 30 * offload.PARENT_POLL_SECONDS
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in children)


def test_the_segpipe_command_exits_after_using_the_pool() -> None:
    """``run_and_exit`` skips the interpreter's teardown, where concurrent.futures would stop the children."""
    code = (
        "import os\n"
        "from segpipe import offload\n"
        "from segpipe.cli import entry\n"
        "entry.main = lambda: 0 if offload.run(os.getpid) != os.getpid() else 1\n"
        "entry.run_and_exit()\n"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_in_a_daemonic_process_work_runs_in_the_caller(two_cores, monkeypatch: pytest.MonkeyPatch) -> None:
    """Dask's nannies start daemonic worker processes, which multiprocessing forbids to have children."""
    monkeypatch.setattr(offload.multiprocessing.current_process(), "daemon", True)
    assert offload.run(os.getpid) == os.getpid()
