"""Finalize: image and mask pyramids, NGFF metadata, and last the store's commit.

The NGFF metadata carries the input's pixel size and GeoTIFF tags, the commit its ``infer_key``; optionally the mask is
also written as a (Geo)TIFF. No rename: the store is built in place and trusted only once committed, on any store.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from segpipe.executor import Executor, local_executor
from segpipe.io import copy as ingest_io
from segpipe.io.export import export_tiff, scaled_geotiff_tags
from segpipe.io.images import ImageSource, read_metadata
from segpipe.io.omezarr import build_pyramid, level_count, read_segpipe_attrs, write_metadata
from segpipe.normalize import BandStats
from segpipe.stages.infer import first_level_of, probabilities_path, uncertainty_path
from segpipe.stages.ingest import is_committed, job_grid, level0
from segpipe.stages.plan import BatchPlan, ImageJob
from segpipe.storage import location


@dataclass(frozen=True)
class Finalized:
    """A committed OME-Zarr store and where its parts are."""

    store: str
    mask: str
    source: ImageSource
    seconds: float
    probabilities: str | None = None
    tiff: str | None = None
    pixel_size: tuple[float, float] = (1.0, 1.0)
    unit: str | None = None  # of pixel_size; None: pixels
    uncertainty: str | None = None  # level 0 of the per-pixel entropy's pyramid


def finalize_image(
    job: ImageJob, plan: BatchPlan, stats: BandStats, export: bool = False, executor: Executor = local_executor
) -> Finalized:
    """Build the pyramids and write the metadata (committing the store) unless already committed."""
    start = time.perf_counter()
    if not is_committed(job):
        if job.fence is not None:
            job.fence.check()
        _, rows, cols = job.grid
        levels = level_count(rows, cols)
        first_level = first_level_of(job, plan)
        written = first_level.written() if first_level is not None else None  # by the infer tasks
        build_pyramid(job.store, levels, plan.chunk, False, executor, written)
        build_pyramid(location(job.store).child("labels", "mask").url, levels, plan.chunk, True, executor, written)
        if plan.save_uncertainty:
            build_pyramid(location(job.store).child("uncertainty").url, levels, plan.chunk, False, executor)
        _commit(job, plan, stats, levels)
    tiff = _export(job) if export else None
    attrs = read_segpipe_attrs(job.store)
    return Finalized(
        job.store,
        job.mask,
        ingest_io.open_copy(job.image, level0(job), job_grid(job, plan)),
        time.perf_counter() - start,
        probabilities_path(job) if plan.save_probabilities else None,
        tiff,
        tuple(attrs.get("pixel_size") or (1.0, 1.0)),
        attrs.get("unit"),
        uncertainty_path(job) if plan.save_uncertainty else None,
    )


def _commit(job: ImageJob, plan: BatchPlan, stats: BandStats, levels: int) -> None:
    """Write the NGFF metadata; the image group's ``segpipe.infer_key`` is the store's commit, written last."""
    if job.fence is not None:
        job.fence.check()
    meta = read_metadata(job.image)
    meta["pixel_size"], meta["unit"] = job.view.ngff_pixel_size(meta["pixel_size"], meta["unit"])
    meta["geotiff_tags"] = scaled_geotiff_tags(meta["geotiff_tags"], job.view.scale)
    extra = {
        "infer_key": job.infer_key,
        "model": plan.model.card.name,
        "model_sha256": plan.model.sha256,
        "source": job.image.path,
        "stats": asdict(stats),
        "geotiff_tags": meta["geotiff_tags"],
        "pixel_size": meta["pixel_size"],
        "unit": meta["unit"],
    }
    card = plan.model.card
    write_metadata(
        job.store, job.name, levels, levels, card.class_names, tuple(meta["pixel_size"]), meta["unit"], extra
    )


def _export(job: ImageJob) -> str:
    attrs = read_segpipe_attrs(job.store)
    tiff = job.path(f"{job.name}_mask.tif")
    export_tiff(job.mask, tiff, attrs.get("geotiff_tags"), tuple(attrs.get("pixel_size", (1, 1))))
    return tiff
