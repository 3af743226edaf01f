"""Ownership: the run that writes an image's outputs holds that image's lease for as long as it writes.

Leases are taken for every pending image before any of them is written, in one global order (their URLs), so
two runs that wait for each other cannot deadlock. A holder of another fingerprint is refused with one line
(or waited for, with ``--wait``); a holder of the same fingerprint is waited for, after which the image is
usually finished and skipped. Every write of a stage is fenced by the job's ``fence`` (``segpipe.storage.lease``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace

from segpipe.config import LeaseConfig
from segpipe.stages.plan import BatchPlan, ImageJob
from segpipe.stages.report import ImageReport, finished_report
from segpipe.stages.settings import RunSettings
from segpipe.stages.validation import check_existing_mask
from segpipe.storage import location
from segpipe.storage.lease import Lease, LeaseKeeper, LeaseRecord, acquire

LEASE_DIR = ".lease"


def lease_folder(job: ImageJob) -> str:
    """Where the image's lease generations live: ``<out>/<name>/.lease/``, beside its store."""
    return location(job.out_dir).child(LEASE_DIR).url


@contextmanager
def hold_outputs(
    jobs: Sequence[ImageJob], run_id: str, config: LeaseConfig, overwrite: bool = False
) -> Iterator[tuple[ImageJob, ...]]:
    """Hold the lease of every job's output while the block runs; yields the jobs with their fences set.

    Once held, each output is checked again as planning checked it: another run may have committed a mask of
    another fingerprint there between this run's plan and its lease (refused unless ``overwrite``).

    Raises:
        LeaseHeld: another run holds one of the leases (those taken already are released).
        OutputError: the output store cannot create files conditionally (pass ``--no-lease``), or it now holds
            another fingerprint's mask.
    """
    if not config.enabled or all(job.fence is not None for job in jobs):  # off, or held by the caller already
        yield tuple(jobs)
        return
    with ExitStack() as stack:
        leases: dict[str, Lease] = {}
        stack.callback(_release_all, leases)
        for job in sorted(jobs, key=lease_folder):
            leases[job.name] = acquire(lease_folder(job), run_id, job.infer_key, config, _same_mask(job))
        if not overwrite:  # a store this run's fingerprint committed passes: finished images are not refused
            for job in jobs:
                check_existing_mask(job.store, job.infer_key)
        stack.enter_context(LeaseKeeper(list(leases.values()), config.seconds / 4))
        yield tuple(replace(job, fence=leases[job.name].fence) for job in jobs)


def _same_mask(job: ImageJob) -> Callable[[LeaseRecord], bool]:
    """Wait for a holder that writes the very mask this job would."""

    def may_wait(holder: LeaseRecord) -> bool:
        return holder.fingerprint == job.infer_key

    return may_wait


def _release_all(leases: dict[str, Lease]) -> None:
    for lease in leases.values():
        lease.release()


def finished_meanwhile(jobs: Sequence[ImageJob]) -> dict[str, ImageReport]:
    """The jobs another run finished while this one waited for their leases, by name."""
    found = {job.name: finished_report(job) for job in jobs}
    return {name: report for name, report in found.items() if report is not None}


@contextmanager
def hold_plan(plan: BatchPlan, settings: RunSettings) -> Iterator[BatchPlan]:
    """``hold_outputs`` for a plan's unfinished images before its flow starts.

    This is the CLI's way: a refusal is one line, not a failed flow run. Yields the plan with those jobs fenced, which
    the flow then keeps.
    """
    pending = [job for job in plan.jobs if finished_report(job) is None]
    holder = f"segpipe-{uuid.uuid4().hex[:12]}"
    with hold_outputs(pending, holder, settings.lease, settings.overwrite) as held:
        fenced = {job.name: job for job in held}
        yield replace(plan, jobs=tuple(fenced.get(job.name, job) for job in plan.jobs))
