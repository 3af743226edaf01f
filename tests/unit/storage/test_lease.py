"""Leases (segpipe/storage/lease.py) on local disk and S3 (moto): one holder at a time, refusal with the holder's
name, waiting, takeover after expiry, fences that stop a holder whose lease was taken, and races started for
real (threads, and processes on local disk)."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from segpipe.config import LeaseConfig
from segpipe.errors import ConfigError, OutputError
from segpipe.storage import lease as leases
from segpipe.storage import location
from segpipe.storage.lease import LeaseHeld, LeaseKeeper, LeaseLost, acquire, read_current

SHORT = LeaseConfig(seconds=1.0)


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leases, "POLL_SECONDS", 0.05)


@pytest.fixture(params=["local", "s3"])
def folder(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A lease folder on local disk or on S3 (whose server's PUTs are made atomic, as S3's are)."""
    if request.param == "local":
        yield str(tmp_path / "img" / ".lease")
    else:
        request.getfixturevalue("atomic_s3_puts")
        yield f"{request.getfixturevalue('s3_bucket')}/out/img/.lease"


def test_a_free_output_is_taken_at_generation_zero(folder: str) -> None:
    held = acquire(folder, "run-a", "fp-a", LeaseConfig())
    current = read_current(folder)
    assert current is not None
    assert current[0] == 0
    assert current[1].run_id == "run-a"
    assert held.generation == 0


def test_another_fingerprint_is_refused_with_the_holder_named(folder: str) -> None:
    acquire(folder, "run-a", "fp-a", LeaseConfig())
    with pytest.raises(LeaseHeld) as refused:
        acquire(folder, "run-b", "fp-b", LeaseConfig())
    message = str(refused.value)
    assert "run run-a" in message
    assert "lease expires" in message
    assert "--wait" in message
    assert "\n" not in message


def test_a_waiting_run_takes_the_lease_once_it_is_released(folder: str) -> None:
    first = acquire(folder, "run-a", "fp", LeaseConfig())
    threading.Timer(0.3, first.release).start()
    second = acquire(folder, "run-b", "fp", LeaseConfig(), may_wait=lambda holder: holder.fingerprint == "fp")
    assert second.generation == 1
    assert second.record.run_id == "run-b"


def test_an_expired_lease_is_taken_over_and_fences_the_old_holder(folder: str) -> None:
    dead = acquire(folder, "run-dead", "fp-a", SHORT)
    fence = dead.fence
    fence.check()
    time.sleep(SHORT.seconds + 0.1)  # the holder was killed: nobody renewed
    taker = acquire(folder, "run-new", "fp-b", LeaseConfig())
    assert taker.generation == 1
    with pytest.raises(LeaseLost, match="taken over"):
        fence.check()
    taker.fence.check()


def test_a_renewed_lease_outlives_its_first_expiry(folder: str) -> None:
    held = acquire(folder, "run-a", "fp-a", SHORT)
    with LeaseKeeper([held], interval=SHORT.seconds / 4) as keeper:
        time.sleep(SHORT.seconds * 2)
        with pytest.raises(LeaseHeld):
            acquire(folder, "run-b", "fp-b", SHORT)
        held.fence.check()
    assert keeper.lost == {}


def test_a_released_lease_stops_its_own_fence(folder: str) -> None:
    held = acquire(folder, "run-a", "fp-a", LeaseConfig())
    fence = held.fence
    held.release()
    leases._TRUSTED_UNTIL.clear()  # as a new process would see it
    with pytest.raises(LeaseLost):
        fence.check()


def test_a_retried_create_that_reports_its_own_write_as_taken_still_wins(
    folder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PUT whose reply was lost is retried and answered 412 by its own earlier write: the token decides."""
    root = type(location(folder))
    real = root.create_if_absent

    def create_then_lose_the_reply(self: object, data: bytes) -> bool:
        real(self, data)  # type: ignore[arg-type]
        return False

    monkeypatch.setattr(root, "create_if_absent", create_then_lose_the_reply)
    held = acquire(folder, "run-a", "fp-a", LeaseConfig())
    assert held.generation == 0


def _race(folder: str, runs: int) -> list[str]:
    def take(i: int) -> str:
        try:
            acquire(folder, f"run-{i}", f"fp-{i}", LeaseConfig())
        except LeaseHeld:
            return "refused"
        return f"run-{i}"

    with ThreadPoolExecutor(runs) as pool:
        return list(pool.map(take, range(runs)))


def test_of_eight_threads_at_once_exactly_one_holds_the_lease(folder: str) -> None:
    outcomes = _race(folder, 8)
    winners = [o for o in outcomes if o != "refused"]
    assert len(winners) == 1, outcomes
    current = read_current(folder)
    assert current is not None
    assert current[1].run_id == winners[0]


def _take_in_process(folder: str, i: int, start: float, results: multiprocessing.Queue[str]) -> None:
    time.sleep(max(0.0, start - time.time()))
    try:
        acquire(folder, f"run-{i}", f"fp-{i}", LeaseConfig())
        results.put(f"run-{i}")
    except LeaseHeld:
        results.put("refused")


def test_of_four_processes_at_once_exactly_one_holds_the_lease(tmp_path: Path) -> None:
    folder = str(tmp_path / "img" / ".lease")
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[str] = context.Queue()
    start = time.time() + 3.0  # every process is up before the start line
    procs = [context.Process(target=_take_in_process, args=(folder, i, start, results)) for i in range(4)]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    winners = [o for o in outcomes if o != "refused"]
    assert len(winners) == 1, outcomes
    current = read_current(folder)
    assert current is not None
    assert current[1].run_id == winners[0]


def test_a_store_without_conditional_writes_is_refused_in_one_line() -> None:
    with pytest.raises(OutputError) as refused:
        acquire("memory://segpipe-lease-test/img/.lease", "run-a", "fp-a", LeaseConfig())
    assert "--no-lease" in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("seconds", [0, 0.5, -3])
def test_a_lease_too_short_to_renew_is_a_config_error(seconds: float) -> None:
    with pytest.raises(ConfigError, match="--lease-seconds"):
        LeaseConfig(seconds=seconds)


def test_a_holder_killed_on_this_host_frees_its_lease_at_once(tmp_path: Path) -> None:
    folder = str(tmp_path / "img" / ".lease")
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[str] = context.Queue()
    holder = context.Process(target=_take_in_process, args=(folder, 0, 0.0, results))
    holder.start()
    assert results.get(timeout=60) == "run-0"
    holder.join(timeout=30)  # it exits holding a lease that has most of a minute to run
    taker = acquire(folder, "run-1", "fp-1", LeaseConfig())
    assert taker.generation == 1
