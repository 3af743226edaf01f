"""Infer: Dask tasks predict every chunk (plus its halo) of the mask and mark it done in the store's ledger.

Each task owns a run of consecutive output chunks of ``<store>/labels/mask/0``; a resumed run computes only the
chunks not marked.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from segpipe.chunk_inference import (
    ChunkJob,
    ChunkOutputs,
    Windowing,
    create_mask,
    create_probabilities,
    create_uncertainty,
    segment_image,
)
from segpipe.config import EvalConfig, InferenceConfig
from segpipe.executor import Executor, local_executor
from segpipe.io.first_level import FirstLevel
from segpipe.io.images import ImageSource
from segpipe.io.ledger import ChunkLedger
from segpipe.scoring import ChunkScoring, ScoredChunks
from segpipe.stages.evaluate import boundary_fold
from segpipe.stages.ingest import Ingested, is_committed, level0
from segpipe.stages.plan import BatchPlan, ImageJob
from segpipe.stages.view import background_tiles_of
from segpipe.storage import location
from segpipe.tiling import chunk_grid


@dataclass(frozen=True)
class Inferred:
    """What inference did for one image: only the chunks it computed count towards its throughput."""

    mask: str
    seconds: float
    megapixels: float
    megapixels_computed: float
    chunks: int
    chunks_computed: int
    task_seconds: float
    class_pixels: tuple[int, ...] = ()
    mean_confidence: float | None = None
    chunks_skipped: int = 0  # without foreground: written as background, never computed
    mean_uncertainty: float | None = None  # nats, over the pixels computed now (with --save-uncertainty)
    uncertain_fraction: float | None = None  # of those pixels, the share above UNCERTAIN_NATS
    compile_seconds: float = 0.0  # of the model's compiles (--compile inductor), part of the tasks' seconds
    scored: ScoredChunks | None = None  # chunks scored against the truth as they were written (see chunk_scoring)

    @property
    def megapixels_per_second(self) -> float | None:
        """Computed megapixels per second of the stage; None when nothing was computed."""
        return self.megapixels_computed / self.seconds if self.megapixels_computed and self.seconds else None


def probabilities_path(job: ImageJob) -> str:
    """Where the class probabilities go in the image's store (with ``--save-probabilities``)."""
    return location(job.store).child("probabilities").url


def uncertainty_path(job: ImageJob) -> str:
    """Where the per-pixel entropy goes in the image's store: level 0 of its pyramid (``--save-uncertainty``)."""
    return location(job.store).child("uncertainty", "0").url


def first_level_of(job: ImageJob, plan: BatchPlan) -> FirstLevel | None:
    """Level 1 of the image's pyramids, as the infer tasks write it (None: finalize builds it whole)."""
    return FirstLevel.of_store(job.store, job.grid[1:], plan.chunk, job.infer_key, job.fence)


def infer_image(
    job: ImageJob,
    ingested: Ingested,
    plan: BatchPlan,
    inference: InferenceConfig,
    executor: Executor = local_executor,
    evaluation: EvalConfig | None = None,
) -> Inferred:
    """Predict every chunk not yet marked done into the image's mask.

    With ``evaluation`` (and a truth ``chunk_scoring`` accepts), each chunk is scored as it is written, so the
    evaluate stage reads only the chunks not computed now.
    """
    start = time.perf_counter()
    tiled = ingested.source
    megapixels = tiled.height * tiled.width / 1e6
    chunks = len(chunk_grid(tiled.height, tiled.width, plan.chunk))
    if is_committed(job):
        return Inferred(job.mask, 0.0, megapixels, 0.0, chunks, 0, 0.0)
    ledger = ChunkLedger(location(job.store), "infer", job.infer_key, job.fence)
    probabilities = probabilities_path(job) if plan.save_probabilities else None
    uncertainty = uncertainty_path(job) if plan.save_uncertainty else None
    first_level = first_level_of(job, plan) if tiled.path == level0(job) else None  # over this store's level 0
    fresh = ledger.is_fresh() or not location(job.mask).exists()
    if fresh:
        ledger.reset()
        create_mask(job.mask, tiled.height, tiled.width, plan.chunk, plan.model.card.num_classes)
        if probabilities:
            create_probabilities(probabilities, tiled.height, tiled.width, plan.chunk, plan.model.card.num_classes)
        if uncertainty:
            create_uncertainty(uncertainty, tiled.height, tiled.width, plan.chunk)
    if first_level is not None and (fresh or not first_level.exists()):
        first_level.create(level0(job), job.mask)
    windowing = Windowing(plan.chunk, plan.tile, plan.halo, plan.tiling.stitch, plan.stride, plan.tiling.pad_mode)
    outputs = ChunkOutputs(job.mask, probabilities, ledger, uncertainty, first_level)
    skipped = _mark_background(job, ledger, tiled, plan.chunk)
    background = background_tiles_of(job.view, plan.tiling.stitch, plan.tile, plan.halo)
    scoring = chunk_scoring(job, plan, evaluation, (tiled.height, tiled.width))
    chunk_job = ChunkJob(tiled, plan.model, windowing, inference, outputs, ingested.stats, background, scoring)
    summary = segment_image(chunk_job, executor)
    return Inferred(
        job.mask,
        time.perf_counter() - start,
        megapixels,
        summary.pixels / 1e6,
        chunks,
        summary.chunks_computed,
        summary.task_seconds,
        summary.class_pixels,
        summary.confidence_sum / summary.pixels if summary.pixels else None,
        skipped,
        summary.entropy_sum / summary.pixels if uncertainty and summary.pixels else None,
        summary.uncertain_pixels / summary.pixels if uncertainty and summary.pixels else None,
        summary.compile_seconds,
        summary.scored,
    )


def chunk_scoring(
    job: ImageJob, plan: BatchPlan, evaluation: EvalConfig | None, shape: tuple[int, int]
) -> ChunkScoring | None:
    """How the infer tasks score their chunks, or None where the evaluate stage keeps its own pass.

    It does for an image without truth or evaluation, a truth of another size than the mask (sampled to the
    mask's grid only by the evaluate stage) and a ``--foreground`` (its mask is not sent to every infer task).
    """
    if evaluation is None or job.truth is None or job.view.foreground_mask is not None:
        return None
    if (job.truth.height, job.truth.width) != shape:
        return None
    fold = boundary_fold(plan, evaluation)
    return ChunkScoring(job.truth, shape, plan.model.card.num_classes, evaluation, fold=fold)


def _mark_background(job: ImageJob, ledger: ChunkLedger, tiled: ImageSource, chunk: int) -> int:
    """Mark the chunks without foreground done, left at the mask's fill value (background); return how many.

    They are never read nor computed; marked, a resumed run finds them done like any chunk.
    """
    if job.view.chunks is None:
        return 0
    skipped = [r for r in chunk_grid(tiled.height, tiled.width, chunk) if r not in job.view.chunks]
    for region in ledger.todo(skipped):
        ledger.mark_done(region)
    return len(skipped)
