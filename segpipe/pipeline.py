"""Per-image steps of a batch: plan (validate everything, write nothing), ingest, infer, evaluate, preview.

Each step is a plain function that the Prefect tasks in ``flows/`` call; the Dask work inside is handed to
an ``executor`` so this module never imports Prefect, MLflow or distributed.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segpipe import metrics
from segpipe.config import EvalConfig, InferenceConfig, TilingConfig
from segpipe.errors import InputError, OutputError
from segpipe.evaluation import evaluate
from segpipe.inference import ChunkJob, Executor, create_mask, local_executor, segment_image
from segpipe.io import ingest as ingest_io
from segpipe.io.images import ImageSource, open_image
from segpipe.models.loader import ModelRef, resolve_model
from segpipe.normalize import BandStats
from segpipe.preview import write_preview
from segpipe.tiling import round_up


@dataclass(frozen=True)
class RunSettings:
    """Everything a batch run is configured with."""

    model: str = "builtin"
    out: str = "segpipe-out"
    tiling: TilingConfig = field(default_factory=TilingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)


@dataclass(frozen=True)
class ImageJob:
    """One image of the batch and where its outputs go."""

    name: str
    image: ImageSource
    truth: ImageSource | None
    out_dir: str

    def path(self, leaf: str) -> str:
        return os.path.join(self.out_dir, leaf)


@dataclass(frozen=True)
class BatchPlan:
    """A validated batch: the model, the resolved tiling and the images."""

    model: ModelRef
    chunk: int
    tile: int
    halo: int
    jobs: tuple[ImageJob, ...]


def plan_batch(images: list[str], truths: list[str] | None, settings: RunSettings) -> BatchPlan:
    """Validate inputs, truths, model and output location; nothing is written.

    Raises:
        InputError, ModelError, OutputError, ConfigError: one line naming the file and the fault.
    """
    if not images:
        raise InputError("no input images given")
    if truths and len(truths) != len(images):
        raise InputError(f"{len(images)} images but {len(truths)} truths: give one truth per image, in order")
    sources = [open_image(p) for p in images]
    model = resolve_model(settings.model)
    for source in sources:
        _check_channels(source, model)
    truth_sources = [_open_truth(t, s) for t, s in zip(truths, sources, strict=True)] if truths else None
    names = [_image_name(p) for p in images]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"{images[names.index(duplicates[0])]}: two inputs share the output name {duplicates[0]!r}")
    _check_writable(settings.out)
    jobs = tuple(
        ImageJob(name, source, truth_sources[i] if truth_sources else None, os.path.join(settings.out, name))
        for i, (name, source) in enumerate(zip(names, sources, strict=True))
    )
    chunk, tile, halo = resolve_tiling(settings.tiling, model)
    return BatchPlan(model, chunk, tile, halo, jobs)


def resolve_tiling(tiling: TilingConfig, model: ModelRef) -> tuple[int, int, int]:
    """Chunk, tile and halo, aligned to the model's size divisor so tiles fall on its pooling grid."""
    divisor = model.card.size_divisor
    halo = round_up(model.card.halo if tiling.halo is None else tiling.halo, divisor)
    tile = min(tiling.tile, tiling.chunk)
    tile = max(divisor, tile - tile % divisor)
    return tiling.chunk, tile, halo


def _check_channels(source: ImageSource, model: ModelRef) -> None:
    expected = model.card.in_channels
    if expected is not None and source.channels != expected:
        raise InputError(
            f"{source.path}: image has {source.channels} band(s); model {model.card.name} expects {expected}"
        )


def _open_truth(path: str, image: ImageSource) -> ImageSource:
    truth = open_image(path)
    if truth.channels != 1:
        raise InputError(f"{path}: truth must be a single-band label image, found {truth.channels} bands")
    if (truth.height, truth.width) != (image.height, image.width):
        raise InputError(
            f"{path}: truth is {truth.height} x {truth.width} but image {image.path} is "
            f"{image.height} x {image.width}"
        )
    if np.dtype(truth.dtype).kind not in "ub" and np.dtype(truth.dtype).kind != "i":
        raise InputError(f"{path}: truth must hold integer class labels, found {np.dtype(truth.dtype)} pixels")
    return truth


def _image_name(path: str) -> str:
    name = Path(path.rstrip("/")).name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_writable(out: str) -> None:
    existing = Path(out).resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise OutputError(f"{out}: output location is not a writable directory")


def ingest_step(job: ImageJob, chunk: int, executor: Executor = local_executor) -> dict[str, Any]:
    """Tile a TIFF into ``input.zarr`` (a Zarr input is used in place). Returns the source to infer on."""
    start = time.perf_counter()
    os.makedirs(job.out_dir, exist_ok=True)
    if job.image.kind == "zarr":
        stats = ingest_io.measure(job.image, chunk, executor)
        tiled = job.image
    else:
        dest = job.path("input.zarr")
        stats = ingest_io.ingest(job.image, dest, chunk, executor)
        tiled = open_image(dest)
    return {"source": tiled, "stats": stats, "seconds": time.perf_counter() - start}


def infer_step(
    job: ImageJob,
    tiled: ImageSource,
    stats: BandStats,
    plan: BatchPlan,
    inference: InferenceConfig,
    executor: Executor = local_executor,
) -> dict[str, Any]:
    """Predict every chunk into ``mask.zarr``. The mask appears under its final name only when complete."""
    start = time.perf_counter()
    final, partial = job.path("mask.zarr"), job.path("mask.zarr.partial")
    create_mask(partial, tiled.height, tiled.width, plan.chunk, plan.model.card.num_classes)
    use_stats = stats if plan.model.card.normalization == "percentile" else None
    chunk_job = ChunkJob(tiled, partial, plan.model, plan.chunk, plan.tile, plan.halo, inference, use_stats)
    summary = segment_image(chunk_job, executor)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)
    seconds = time.perf_counter() - start
    megapixels = tiled.height * tiled.width / 1e6
    return {"mask": final, "seconds": seconds, "megapixels": megapixels,
            "megapixels_per_second": megapixels / seconds, **summary}


def evaluate_step(
    job: ImageJob, mask: str, plan: BatchPlan, config: EvalConfig, executor: Executor = local_executor
) -> dict[str, Any]:
    """Confusion matrix and scores of ``mask`` against the job's truth."""
    if job.truth is None:
        raise InputError(f"{job.image.path}: no truth given, nothing to evaluate")
    start = time.perf_counter()
    confusion = evaluate(open_image(mask), job.truth, plan.model.card.num_classes, config, plan.chunk, executor)
    return {"confusion": confusion, "scores": metrics.scores(confusion), "seconds": time.perf_counter() - start}


def preview_step(job: ImageJob, tiled: ImageSource, mask: str, stats: BandStats) -> str:
    """Write ``preview.png``: image | prediction | truth."""
    return str(write_preview(job.path("preview.png"), tiled, open_image(mask), job.truth, stats))


def write_json(path: str, payload: dict[str, Any]) -> str:
    """Write JSON atomically (a crash never leaves half a file)."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w") as handle:
            json.dump(payload, handle, indent=2, allow_nan=False, default=_json_default)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc})") from None
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finite_or_none(value: Any) -> Any:
    """Replace NaN (a class absent from truth and prediction) by None, recursively, for JSON."""
    if isinstance(value, float):
        return None if not np.isfinite(value) else value
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    return value

