"""Run a command as a user would and measure it: wall time, exit code, output, and the peak resident memory of
its whole process tree (the command, and every process it starts: for ``segpipe run`` the Dask worker processes,
multiprocessing's resource tracker and Prefect's temporary API server; the scheduler and nannies live in the
command's own process), sampled by a background thread."""

from __future__ import annotations

import shlex
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

SAMPLE_SECONDS = 0.1
COMMAND_TIMEOUT = 6 * 3600  # a gigapixel on a slow CPU takes long; a hung command must still end


@dataclass(frozen=True)
class CommandRun:
    """One finished command. ``peak_rss_bytes`` is the largest sum of RSS over the tree seen by the sampler
    (shared library pages count once per process, so it errs high)."""

    argv: tuple[str, ...]
    seconds: float
    returncode: int
    peak_rss_bytes: int
    peak_processes: int
    stdout: str
    stderr: str

    @property
    def command(self) -> str:
        """The command line, quoted for a shell."""
        return shlex.join(self.argv)

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_bytes / 2**20

    def summary(self) -> dict[str, object]:
        """The JSON-ready facts of the run (no output text)."""
        return {
            "command": self.command,
            "seconds": self.seconds,
            "returncode": self.returncode,
            "peak_tree_rss_mib": self.peak_rss_mib,
            "peak_processes": self.peak_processes,
        }


Runner = Callable[[Sequence[str], Mapping[str, str] | None, Path | None], CommandRun]


class TreeSampler:
    """Samples the summed RSS of process ``pid`` and all its descendants every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = SAMPLE_SECONDS) -> None:
        self.pid, self.interval = pid, interval
        self.peak_bytes, self.peak_processes = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> None:
        """Take one sample now."""
        try:
            root = psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for process in tree:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue  # it ended between the listing and the read
        self.peak_bytes = max(self.peak_bytes, total)
        self.peak_processes = max(self.peak_processes, len(tree))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure_command(argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> CommandRun:
    """Run ``argv`` to completion; its wall time runs from the start of the process to its exit."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(list(argv), stdout=out, stderr=err, env=dict(env) if env else None, cwd=cwd)
        with TreeSampler(process.pid) as sampler:
            try:
                returncode = process.wait(timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                returncode = process.wait()
            seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return CommandRun(tuple(argv), seconds, returncode, sampler.peak_bytes, sampler.peak_processes, stdout, stderr)
