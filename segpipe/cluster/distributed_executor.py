"""An executor that runs delayed tasks on a distributed client, with per-label Dask resources and progress."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from distributed import Client, Future

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
        """Keep the client, the progress switch, each label's resources (empty ones dropped) and ``min_slots``."""
        self.client = client
        self.show_progress = show_progress
        self.wanted = {label: dict(need) for label, need in (resources or {}).items() if need}
        self.min_slots = min_slots

    def __call__(self, tasks: Sequence[Any], label: str = "") -> list[Any]:
        """Compute ``tasks`` on the cluster with the resources ``label`` needs; their results, in order."""
        # distributed leaves Client.compute and Client.gather unannotated
        futures = self.client.compute(list(tasks), resources=self.wanted.get(label))  # type: ignore[no-untyped-call]
        if self.show_progress and len(futures) > 1:
            _progress(futures, label)
        return list(self.client.gather(futures))  # type: ignore[no-untyped-call]

    def slots(self, label: str = "") -> int:
        """How many of ``label``'s tasks can run at once.

        The threads of the workers that can run them now (those holding the resources they need), or
        ``min_slots`` while fewer have joined.
        """
        need = self.wanted.get(label, {})
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        return max(self.min_slots, self._threads(workers, need))

    @staticmethod
    def _threads(workers: Iterable[Mapping[str, Any]], need: dict[str, float]) -> int:
        return sum(
            int(worker.get("nthreads", 1))
            for worker in workers
            if all(worker.get("resources", {}).get(name, 0) >= amount for name, amount in need.items())
        )


def _progress(futures: list[Future[Any]], label: str, poll_seconds: float = 0.2) -> None:
    """A progress bar on stderr until every future is finished (done, failed or cancelled).

    Polls ``Future.done()`` rather than using ``as_completed``, which needs a default client.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as bar:
        task = bar.add_task(f"{label:>8} tasks", total=len(futures))
        while True:
            # distributed leaves Future.done unannotated
            finished = sum(future.done() for future in futures)  # type: ignore[no-untyped-call]
            bar.update(task, completed=finished)
            if finished == len(futures):
                return
            time.sleep(poll_seconds)
