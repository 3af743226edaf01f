"""Leases: one writer per output, on any store that can create an object only if it is absent.

A lease lives in a folder of numbered generations, ``<folder>/<generation>.json``; the highest generation is the
lease in force. Taking a lease creates the next generation with an atomic create-if-absent (``O_EXCL``-style on
local disk, a PUT with ``If-None-Match: *`` on S3), so of any number of runs that try at once exactly one wins, and
nothing is ever deleted or renamed to decide who. A free lease is a generation that is released or expired.

The holder renews its generation's expiry while it works, and every write it makes is fenced by a
``LeaseFence``: a small picklable token that chunk tasks carry and check before each write. A fence trusts the
expiry it last read until ``margin`` seconds before it, then reads the lease again; a fence whose generation is no
longer the highest, or has expired, raises ``LeaseLost``. A holder killed with SIGKILL stops renewing, its lease
expires and the next run takes it over (at once on the same host, where the holder's process is seen gone).
Expiry is wall-clock time of the writer's host: hosts sharing an output need clocks within ``margin`` of each
other (NTP is far closer).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

from segpipe.config import LeaseConfig
from segpipe.errors import OutputError
from segpipe.storage.location import Location, location

SUFFIX = ".json"
WIDTH = 10  # digits of a generation's name, so names sort as numbers
POLL_SECONDS = 1.0
WAIT_LIMIT_SECONDS = 24 * 3600.0


class LeaseLost(OutputError):
    """The lease this run held was taken over (it expired) or is no longer the lease in force."""


class LeaseHeld(OutputError):
    """Another run holds the lease."""


@dataclass(frozen=True)
class LeaseRecord:
    """What a generation's file says: who holds it, for which fingerprint, until when."""

    run_id: str
    fingerprint: str
    host: str
    pid: int
    expires_at: float  # seconds since the epoch
    token: str = ""  # unique per acquisition: tells this run's own record from another's
    released: bool = False

    def is_free(self, now: float) -> bool:
        """Released, expired at ``now``, or held by a process of this host that no longer exists."""
        return self.released or now >= self.expires_at or self.died_here()

    def died_here(self) -> bool:
        """The holder ran on this host and its process is gone (killed), so its lease need not run out."""
        if self.host != socket.gethostname() or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False

    def describe(self) -> str:
        """``run R on HOST (pid P), expires 2026-12-01 20:15:03 UTC``, for error lines."""
        expiry = datetime.fromtimestamp(self.expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        return f"run {self.run_id} on {self.host} (pid {self.pid}), lease expires {expiry}"


@dataclass(frozen=True)
class LeaseFence:
    """The token a writer checks before each write: which generation of which lease folder is ours."""

    folder: str
    generation: int
    token: str
    margin: float

    def check(self) -> None:
        """Raise ``LeaseLost`` unless our generation is still the lease in force for at least ``margin``."""
        key = (self.folder, self.generation, self.token)
        if time.time() < _TRUSTED_UNTIL.get(key, 0.0):
            return
        current = read_current(self.folder)
        now = time.time()
        if current is None or current[0] != self.generation or current[1].token != self.token:
            raise LeaseLost(f"{self.folder}: this run's lease was taken over by another run; its writes stopped")
        if current[1].is_free(now):
            raise LeaseLost(f"{self.folder}: this run's lease expired before it was renewed; its writes stopped")
        _TRUSTED_UNTIL[key] = current[1].expires_at - self.margin


_TRUSTED_UNTIL: dict[tuple[str, int, str], float] = {}  # per process: a fence's last confirmed expiry


def read_current(folder: str | Location) -> tuple[int, LeaseRecord] | None:
    """The lease in force: the highest generation and its record, or None when there is none yet."""
    root = location(folder)
    generations = sorted(int(name[: -len(SUFFIX)]) for name in root.listdir() if _is_generation(name))
    for generation in reversed(generations):  # a generation being written may not read yet: take the one below
        try:
            return generation, LeaseRecord(**root.child(_name(generation)).read_json())
        except (FileNotFoundError, ValueError, TypeError):
            continue
    return None


def _is_generation(name: str) -> bool:
    return name.endswith(SUFFIX) and name[: -len(SUFFIX)].isdigit()


def _name(generation: int) -> str:
    return f"{generation:0{WIDTH}d}{SUFFIX}"


def margin(config: LeaseConfig) -> float:
    """Writes stop this long before the expiry a writer last confirmed."""
    return config.seconds / 4


class Lease:
    """A lease this run holds on one output: renew it while working, fence writes with it, release it."""

    def __init__(self, folder: Location, generation: int, record: LeaseRecord, config: LeaseConfig) -> None:
        """The lease acquired as generation ``generation`` in ``folder``, its file holding ``record``."""
        self.folder = folder
        self.generation = generation
        self.record = record
        self.config = config
        self._lock = threading.Lock()

    @property
    def fence(self) -> LeaseFence:
        """The token chunk tasks carry."""
        return LeaseFence(self.folder.url, self.generation, self.record.token, margin(self.config))

    def renew(self) -> None:
        """Push the expiry forward; raise ``LeaseLost`` when the lease is no longer ours."""
        with self._lock:
            _check_ours(self)
            renewed = replace(self.record, expires_at=time.time() + self.config.seconds)
            self.folder.child(_name(self.generation)).write_bytes(_encode(renewed))
            self.record = renewed

    def release(self) -> None:
        """Mark the lease free, if it is still ours (a lease taken over is left to its new holder)."""
        with self._lock:
            try:
                _check_ours(self)
            except LeaseLost:
                return
            self.folder.child(_name(self.generation)).write_bytes(_encode(replace(self.record, released=True)))


def _check_ours(lease: Lease) -> None:
    current = read_current(lease.folder)
    if current is None or current[0] != lease.generation or current[1].token != lease.record.token:
        raise LeaseLost(f"{lease.folder.url}: this run's lease was taken over by another run")


def _encode(record: LeaseRecord) -> bytes:
    return json.dumps(asdict(record), sort_keys=True).encode()


def acquire(
    folder: str | Location,
    run_id: str,
    fingerprint: str,
    config: LeaseConfig,
    may_wait: Callable[[LeaseRecord], bool] = lambda holder: False,
) -> Lease:
    """Take the lease at ``folder``: create the next generation when the one in force is free.

    A held lease is waited for when ``config.wait`` or ``may_wait(holder)`` says so (polling until it is released
    or expires, at most a day); otherwise ``LeaseHeld`` names the holder and its expiry.
    """
    root = location(folder)
    _require_conditional_create(root)
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while True:
        current = read_current(root)
        now = time.time()
        if current is None or current[1].is_free(now):
            generation = 0 if current is None else current[0] + 1
            record = LeaseRecord(
                run_id, fingerprint, socket.gethostname(), os.getpid(), now + config.seconds, uuid.uuid4().hex
            )
            if _create(root, generation, record):
                _forget_old(root, generation)
                return Lease(root, generation, record, config)
            continue  # another run created that generation first: read again
        holder = current[1]
        if not (config.wait or may_wait(holder)):
            raise LeaseHeld(
                f"{root.parent.url}: another run is writing this output: {holder.describe()} (or pass --wait)"
            )
        if time.monotonic() > deadline:
            raise LeaseHeld(f"{root.parent.url}: gave up waiting for {holder.describe()}")
        time.sleep(POLL_SECONDS)


def _create(root: Location, generation: int, record: LeaseRecord) -> bool:
    """Create ``generation``; True when this call's record is the one stored.

    A retried PUT may report False for its own write, so the stored token decides.
    """
    target = root.child(_name(generation))
    if target.create_if_absent(_encode(record)):
        return True
    try:
        return bool(target.read_json().get("token") == record.token)
    except (FileNotFoundError, ValueError, AttributeError):
        return False


def _require_conditional_create(root: Location) -> None:
    if not root.supports_conditional_create:
        raise OutputError(
            f"{root.url}: this store cannot create a file only if it is absent, so segpipe cannot keep two runs "
            "from writing the same output; pass --no-lease if only one run writes here at a time"
        )


def _forget_old(root: Location, newest: int) -> None:
    """Drop generations two or more below ``newest``: no writer can hold them (best effort)."""
    for name in root.listdir():
        if _is_generation(name) and int(name[: -len(SUFFIX)]) < newest - 1:
            try:
                root.child(name).remove()
            except OSError:
                pass


class LeaseKeeper:
    """Renews every lease a run holds from one thread.

    A lost lease is remembered in ``lost`` (the run's fences fail on their own at their next check).
    """

    def __init__(self, leases: list[Lease], interval: float) -> None:
        """Renew ``leases`` every ``interval`` seconds once entered."""
        self.leases = leases
        self.interval = interval
        self.lost: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="segpipe-lease-keeper", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        """Start renewing."""
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop renewing and wait for the thread."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for lease in self.leases:
                if lease.folder.url in self.lost:
                    continue
                try:
                    lease.renew()
                except LeaseLost as exc:
                    self.lost[lease.folder.url] = str(exc)
                except OSError:
                    pass  # a transient store fault: the next round tries again, the fences still check expiry
