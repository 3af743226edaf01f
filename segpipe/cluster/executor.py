"""An executor that runs delayed tasks on a distributed client, with per-label Dask resources and progress."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from distributed import Client

from segpipe.executor import Executor

Resources = Mapping[str, Mapping[str, float]]


def distributed_executor(
    client: Client, show_progress: bool = False, resources: Resources | None = None, min_slots: int = 0
) -> Executor:
    """An executor computing delayed tasks on ``client``; a progress bar on stderr when asked.

    ``resources`` maps an executor label to the Dask resources each of its tasks needs, e.g.
    ``{"infer": {"GPU": 1}}`` (``ClusterHandle.task_resources``): only inference waits for a GPU worker, while
    ingest, pyramid and evaluate tasks run anywhere. Labels it does not name ask for nothing. ``min_slots``: the
    task slots to plan for even before workers join (the SLURM jobs or pods requested).
    """
    return DistributedExecutor(client, show_progress, resources, min_slots)


class DistributedExecutor:
    """Runs delayed tasks on a distributed client (see ``distributed_executor``)."""

    def __init__(
        self, client: Client, show_progress: bool = False, resources: Resources | None = None, min_slots: int = 0
    ) -> None:
        self.client = client
        self.show_progress = show_progress
        self.wanted = {label: dict(need) for label, need in (resources or {}).items() if need}
        self.min_slots = min_slots

    def __call__(self, tasks: Sequence[Any], label: str = "") -> list[Any]:
        futures = self.client.compute(list(tasks), resources=self.wanted.get(label))
        if self.show_progress and len(futures) > 1:
            _progress(futures, label)
        return list(self.client.gather(futures))

    def slots(self, label: str = "") -> int:
        """Threads of the workers that can run ``label``'s tasks now (those holding the resources it needs), or
        ``min_slots`` while fewer have joined."""
        need = self.wanted.get(label, {})
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return max(self.min_slots, self._threads(workers, need))

    @staticmethod
    def _threads(workers: Any, need: dict[str, float]) -> int:
        return sum(
            int(worker.get("nthreads", 1))
            for worker in workers
            if all(worker.get("resources", {}).get(name, 0) >= amount for name, amount in need.items())
        )


def _progress(futures: list[Any], label: str, poll_seconds: float = 0.2) -> None:
    """A progress bar on stderr until every future is finished (done, failed or cancelled).

    Polls ``Future.done()`` rather than using ``as_completed``, which needs a default client.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task(f"{label:>8} tasks", total=len(futures))
        while True:
            finished = sum(future.done() for future in futures)
            bar.update(task, completed=finished)
            if finished == len(futures):
                return
            time.sleep(poll_seconds)
