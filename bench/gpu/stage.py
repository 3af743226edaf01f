"""The infer stage as ``segment_batch`` runs it (plan, ingest, infer on a Dask cluster), without Prefect or MLflow,
on a synthetic nuclei image this module writes itself."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from segpipe import normalize
from segpipe.cluster import ClusterHandle, ClusterSpec, distributed_executor, open_cluster, register_model
from segpipe.config import InferenceConfig, TilingConfig
from segpipe.executor import Executor
from segpipe.models import model_payload
from segpipe.stages.infer import Inferred, infer_image
from segpipe.stages.ingest import Ingested, ingest_image
from segpipe.stages.plan import BatchPlan, plan_batch
from segpipe.stages.settings import RunSettings
from segpipe.storage import OWN_FORMAT, open_array
from segpipe.synthetic import NOISE_TILE, noisy_tile
from segpipe.tiling import chunk_grid
from segpipe.windows import trim_edge, window_count


def _tile_row(job: tuple[int, int, int]) -> np.ndarray:
    row, tiles, seed = job
    return np.concatenate([noisy_tile(row, col, seed)[0] for col in range(tiles)], axis=1)


def write_image(path: Path, size: int, seed: int = 0) -> Path:
    """A ``size``^2 uint16 synthetic nuclei TIFF (tiled 256, zlib level 1), rendered on every core.

    Rendered in forked processes: call it before CUDA is initialised in this process.
    """
    tiles = -(-size // NOISE_TILE)
    jobs = [(row, tiles, seed) for row in range(tiles)]
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
        rows = pool.map(_tile_row, jobs)
    pixels = np.concatenate(rows, axis=0)[:size, :size]
    tifffile.imwrite(
        path,
        pixels,
        tile=(NOISE_TILE, NOISE_TILE),
        compression="zlib",
        compressionargs={"level": 1},
        bigtiff=size > 30000,
        maxworkers=os.cpu_count(),
    )
    return path


def normalized(path: Path, edge: int) -> np.ndarray:
    """The top-left ``edge``^2 of the TIFF as float32, scaled with segpipe's percentile statistics."""
    pixels = tifffile.imread(path)[:edge, :edge]
    stride = normalize.sample_stride(*pixels.shape)
    stats = normalize.BandStats.from_samples(pixels[None, ::stride, ::stride])
    return normalize.apply(pixels[None], stats)[0]


@dataclass(frozen=True)
class StageRun:
    """One image through ingest and infer at one precision.

    ``windows`` and ``window`` are the model inputs inference computed (tile + 2 halo, rounded up), for the
    forward-share estimate; ``ingest_seconds`` is zero for a run that reused another's ingest.
    """

    size: int
    precision: str
    chunk: int
    tile: int
    window: int
    windows: int
    ingest_seconds: float
    infer_seconds: float
    task_seconds: float
    megapixels: float
    megapixels_per_second: float
    mask: str

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the JSON."""
        return asdict(self)


@dataclass(frozen=True)
class Cluster:
    """An open cluster, its executor and what the report says of it."""

    handle: ClusterHandle
    executor: Executor
    dask_cuda: bool


def dask_cuda_available() -> bool:
    """Whether dask-cuda is importable (else segpipe's cuda backend starts its own worker per GPU)."""
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        return False
    return True


@contextmanager
def cluster(kind: str, plan: BatchPlan) -> Iterator[Cluster]:
    """Open ``--cluster kind`` as segment_batch does, with ``plan``'s model installed on every worker."""
    with open_cluster(ClusterSpec.parse(kind)) as handle:
        register_model(handle.client, plan.model, model_payload(plan.model))
        executor = distributed_executor(handle.client, False, handle.task_resources, min_slots=handle.workers)
        yield Cluster(handle, executor, dask_cuda_available())


def settings(out: Path, chunk: int, tile: int, precision: str, device: str, threads: int | None) -> RunSettings:
    """The run settings segpipe run would build from ``--chunk --tile --precision --device``."""
    inference = InferenceConfig(device=device, precision=precision, torch_threads=threads)
    return RunSettings(out=str(out), tiling=TilingConfig(chunk=chunk, tile=tile), inference=inference, overwrite=True)


def planned(image: Path, run: RunSettings) -> BatchPlan:
    """The validated one-image plan (writes nothing)."""
    return plan_batch([str(image)], None, run)


def windows_of(plan: BatchPlan, height: int, width: int) -> int:
    """How many model inputs inference computes over an image of ``height`` x ``width``."""
    regions = chunk_grid(height, width, plan.chunk)
    return sum(window_count(region, plan.tiling.stitch, plan.tile, plan.stride) for region in regions)


def window_edge(plan: BatchPlan) -> int:
    """The edge of one model input: tile + 2 halo, rounded up to the model's size divisor."""
    return trim_edge(plan.chunk, plan.chunk, plan.tile, plan.halo, plan.model.card.size_divisor)


def ingest(plan: BatchPlan, executor: Executor) -> Ingested:
    """Ingest the plan's one image."""
    return ingest_image(plan.jobs[0], plan, executor)


def infer(size: int, plan: BatchPlan, run: RunSettings, ingested: Ingested, executor: Executor) -> StageRun:
    """Infer the plan's one image from ``ingested`` (its Zarr copy) into the plan's own store."""
    job = plan.jobs[0]
    done: Inferred = infer_image(job, ingested, plan, run.inference, executor)
    if done.megapixels_per_second is None:
        raise RuntimeError(f"{job.image.path}: inference computed no chunk")
    return StageRun(
        size=size,
        precision=run.inference.precision,
        chunk=plan.chunk,
        tile=plan.tile,
        window=window_edge(plan),
        windows=windows_of(plan, ingested.source.height, ingested.source.width),
        ingest_seconds=ingested.seconds,
        infer_seconds=done.seconds,
        task_seconds=done.task_seconds,
        megapixels=done.megapixels_computed,
        megapixels_per_second=done.megapixels_per_second,
        mask=done.mask,
    )


def reused(ingested: Ingested) -> Ingested:
    """``ingested`` as a second run sees it: the copy is there, nothing was ingested."""
    return replace(ingested, seconds=0.0, reused=True)


def mask_agreement(first: str, second: str, chunk: int) -> float:
    """The fraction of equal pixels of two masks of one shape, read chunk by chunk."""
    one, two = open_array(first, zarr_format=OWN_FORMAT), open_array(second, zarr_format=OWN_FORMAT)
    if one.shape != two.shape:
        raise ValueError(f"{first} and {second}: shapes {one.shape} and {two.shape} differ")
    equal = 0
    for region in chunk_grid(one.shape[0], one.shape[1], chunk):
        box = (slice(region.y0, region.y1), slice(region.x0, region.x1))
        equal += int(np.count_nonzero(np.asarray(one[box]) == np.asarray(two[box])))
    return equal / (one.shape[0] * one.shape[1])


def worker_memory_peak(handle: ClusterHandle) -> int | None:
    """The largest ``torch.cuda.max_memory_allocated`` over the cluster's workers (None without a GPU)."""
    peaks = handle.client.run(_cuda_peak)
    values = [int(value) for value in peaks.values() if value is not None]
    return max(values) if values else None


def _cuda_peak() -> int | None:
    import torch

    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None
