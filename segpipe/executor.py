"""The seam between the stages and whatever runs their chunk tasks.

An ``Executor`` takes ``dask.delayed`` tasks and a label (``ingest``, ``infer``, ``pyramid``, ``evaluate``) and
returns their results in order. The flows pass one that runs on a distributed cluster; without one, tasks run on
Dask's local scheduler.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from dask.base import compute

Executor = Callable[[Sequence[Any], str], list[Any]]


def local_executor(tasks: Sequence[Any], label: str = "") -> list[Any]:
    """Run delayed tasks on whatever Dask scheduler is active."""
    return list(compute(*tasks))  # type: ignore[no-untyped-call]  # dask.base.compute is unannotated


def task_slots(executor: Executor, label: str = "") -> int:
    """How many of ``label``'s tasks ``executor`` runs at once.

    Its ``slots(label)`` when it has one (a distributed executor counts the threads of the workers that can run
    them), else this machine's cores (Dask's local scheduler runs a thread per core).
    """
    slots = getattr(executor, "slots", None)
    count = slots(label) if callable(slots) else os.cpu_count()
    return max(1, count or 1)
