"""Ingest: the input, read tile by tile, becomes level 0 of the image's OME-Zarr on the chunk grid.

The input is read from wherever it lives; a strided pixel sample gives the band statistics. Resumes from the chunk
ledger in the store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from segpipe.executor import Executor, local_executor
from segpipe.io import copy as ingest_io
from segpipe.io.images import ImageSource
from segpipe.io.ledger import ChunkLedger
from segpipe.io.omezarr import read_segpipe_attrs
from segpipe.normalize import BandStats
from segpipe.preprocessing import stats_needed
from segpipe.stages.fingerprints import mask_fingerprint
from segpipe.stages.plan import BatchPlan, ImageJob
from segpipe.stages.view import background_tiles_of, copied_parts
from segpipe.storage import location


@dataclass(frozen=True)
class Ingested:
    """The tiled copy of an image and its band statistics."""

    source: ImageSource
    stats: BandStats
    seconds: float
    reused: bool

    def stats_dict(self) -> dict[str, Any]:
        """The statistics as JSON-ready lists (``BandStats.from_dict`` reads them back)."""
        stats = self.stats
        bands = {"low": list(stats.low), "high": list(stats.high), "mean": list(stats.mean), "std": list(stats.std)}
        return {**bands, "percentiles": [[q, list(values)] for q, values in stats.percentiles]}


def is_committed(job: ImageJob) -> bool:
    """Whether the image's OME-Zarr was finished under this job's ``infer_key``."""
    return mask_fingerprint(job.store) == job.infer_key


def level0(job: ImageJob) -> str:
    """The tiled input inside the store."""
    return location(job.store).child("0").url


def stored_stats(store: str) -> BandStats:
    """The band statistics a finished OME-Zarr store was normalised with (written by finalize)."""
    stats = read_segpipe_attrs(store)["stats"]
    return BandStats.from_dict(stats)


def prepare_build(job: ImageJob) -> None:
    """Clear what must not survive before a store is built in place.

    A mask committed under another fingerprint (``--overwrite``) is removed whole, so no stale commit survives; in an
    unfinished build of ours, partial writes a kill left are removed.
    """
    if job.fence is not None:
        job.fence.check()
    store = location(job.store)
    committed = mask_fingerprint(job.store)
    if committed is not None and committed != job.infer_key:
        store.remove()
    elif store.exists():
        store.remove_partial_writes()


def ingest_image(job: ImageJob, plan: BatchPlan, executor: Executor = local_executor) -> Ingested:
    """Tile the input into ``<store>/0``, resuming an interrupted copy; a finished store is reused as it is."""
    start = time.perf_counter()
    grid = job_grid(job, plan)
    if is_committed(job):
        return Ingested(ingest_io.open_copy(job.image, level0(job), grid), stored_stats(job.store), 0.0, True)
    prepare_build(job)
    ledger = ChunkLedger(location(job.store), "ingest", job.ingest_key, job.fence)
    want = stats_needed(plan.model.card.input_steps)
    reader = job.view.source(job.image)
    stats = ingest_io.ingest(reader, level0(job), plan.chunk, executor, ledger, want, grid)
    return Ingested(ingest_io.open_copy(job.image, level0(job), grid), stats, time.perf_counter() - start, False)


def job_grid(job: ImageJob, plan: BatchPlan) -> ingest_io.Grid:
    """The grid the job's input is copied onto: the model's, only the parts of chunks that computed tiles read."""
    view, shape = job.view, job.grid
    context = plan.tile if plan.tiling.stitch == "gaussian" else plan.halo
    background = background_tiles_of(view, plan.tiling.stitch, plan.tile, plan.halo)
    parts = copied_parts(view, shape[1:], plan.chunk, context, background, plan.tile)
    sample_mask = view.sample_mask if view.foreground_mask is not None else None
    copied = None if parts is None else frozenset(parts)
    return ingest_io.Grid(shape, view.grid_dtype(job.image), view.factor, copied, sample_mask, parts)
