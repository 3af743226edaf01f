"""Tiled inference: one task per output chunk, reading the chunk plus its halo, writing only that chunk.

Knows nothing of Prefect or distributed: it builds ``dask.delayed`` tasks and hands them to an executor
(plain ``dask.compute`` by default; the flows pass one that runs on a distributed cluster).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import dask
import numpy as np

from segpipe import normalize
from segpipe.config import AUTO, InferenceConfig
from segpipe.executor import Executor as Executor  # re-exported: the executor seam lives in segpipe.executor
from segpipe.executor import local_executor as local_executor
from segpipe.io.images import ImageSource
from segpipe.io.progress import ChunkLedger
from segpipe.models.loader import ModelRef, Predictor, load_predictor
from segpipe.storage import create_array, open_array
from segpipe.tiling import (
    Region,
    chunk_grid,
    clip,
    gaussian_weight,
    pad_to_region,
    round_up,
    tiles_in,
    window_origins,
)

T = TypeVar("T")


@dataclass(frozen=True)
class Windowing:
    """How chunks are cut into model inputs and put back together.

    Attributes:
        chunk: edge of the output chunk one task owns.
        tile: ``trim``: edge of a tile before its halo is added; ``gaussian``: the sliding window's edge.
        halo: ``trim``: context added on every side of a tile, then trimmed.
        stitch: ``trim`` or ``gaussian``.
        stride: ``gaussian``: step of the global window grid.
        pad_mode: how the image is extended past its border.
    """

    chunk: int
    tile: int
    halo: int
    stitch: str = "trim"
    stride: int = 0
    pad_mode: str = "symmetric"


@dataclass(frozen=True)
class ChunkOutputs:
    """Where a chunk's results go: the label mask, optionally float16 probabilities (K, Y, X), and the ledger
    a finished chunk is marked in."""

    mask: str
    probabilities: str | None = None
    ledger: ChunkLedger | None = None


@dataclass(frozen=True)
class ChunkJob:
    """Everything one chunk task needs; small and picklable (URLs and settings, never pixels or weights)."""

    source: ImageSource
    model: ModelRef
    windowing: Windowing
    inference: InferenceConfig
    outputs: ChunkOutputs
    stats: normalize.BandStats | None = None


@dataclass(frozen=True)
class ChunkResult:
    """What one chunk task did: its pixels, seconds, predicted pixels per class and summed confidence (the
    softmax probability of the chosen class, summed over the chunk's pixels)."""

    pixels: int
    seconds: float
    class_pixels: tuple[int, ...]
    confidence_sum: float


@dataclass(frozen=True)
class SegmentSummary:
    """The chunks of one image: how many, how many computed now, and what the computed ones predicted."""

    chunks: int
    chunks_computed: int
    pixels: int
    task_seconds: float
    class_pixels: tuple[int, ...]
    confidence_sum: float


def chunk_logits(job: ChunkJob, predictor: Predictor, region: Region) -> np.ndarray:
    """(K, h, w) float32 logits of one chunk, by the job's stitch mode."""
    win, batch_size = job.windowing, job.inference.batch_size
    if win.stitch == "gaussian":
        window = normalize.apply(read_window(job.source, region, win.tile, win.pad_mode), job.stats)
        return blend_windows(predictor, window, region, win.tile, win.stride, batch_size)
    window = normalize.apply(read_window(job.source, region, win.halo, win.pad_mode), job.stats)
    return trim_windows(predictor, window, win.halo, win.tile, batch_size)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 0, computed stably."""
    shifted = np.exp(logits - logits.max(axis=0, keepdims=True))
    return shifted / shifted.sum(axis=0, keepdims=True)


def segment_chunk(job: ChunkJob, region: Region) -> ChunkResult:
    """Predict ``region`` (one chunk), write it to the mask, then mark it done.

    Idempotent: a retried or rescheduled task (worker death) rewrites the same bytes.
    """
    start = time.perf_counter()
    predictor = load_predictor(job.model, job.inference.device, job.inference.torch_threads)
    predictor = predictor.at_precision(job.inference.precision)
    logits = chunk_logits(job, predictor, region)
    num_classes = predictor.card.num_classes
    labels = logits.argmax(axis=0).astype(label_dtype(num_classes))
    probabilities = softmax(logits)
    open_array(job.outputs.mask, mode="r+")[region.y0 : region.y1, region.x0 : region.x1] = labels
    if job.outputs.probabilities:
        stored = open_array(job.outputs.probabilities, mode="r+")
        stored[:, region.y0 : region.y1, region.x0 : region.x1] = probabilities.astype(np.float16)
    if job.outputs.ledger is not None:
        job.outputs.ledger.mark_done(region)
    return ChunkResult(
        pixels=region.height * region.width,
        seconds=time.perf_counter() - start,
        class_pixels=tuple(int(n) for n in np.bincount(labels.ravel(), minlength=num_classes)),
        confidence_sum=float(probabilities.max(axis=0).sum(dtype=np.float64)),
    )


def read_window(source: ImageSource, region: Region, halo: int, pad_mode: str = "symmetric") -> np.ndarray:
    """(C, h + 2 halo, w + 2 halo) pixels around ``region``; padded (``pad_mode``) only past the image border."""
    want = region.grow(halo)
    have = clip(want, source.height, source.width)
    return pad_to_region(source.read(*have), have, want, pad_mode)


def windows_per_pass(predictor: Predictor, batch_size: int | str, channels: int, edge: int, count: int) -> int:
    """``batch_size``, or for ``auto`` the predictor's choice for (channels, edge, edge) windows, at most ``count``."""
    return predictor.batch_size_for(channels, edge, count) if batch_size == AUTO else int(batch_size)


def one_pass_ahead(
    predictor: Predictor, groups: list[list[T]], make_batch: Callable[[list[T]], np.ndarray]
) -> Iterator[tuple[list[T], np.ndarray]]:
    """Each group with its logits, the next group's batch cut and launched before this one's are collected: on a
    GPU the host cuts and normalises batch i + 1 while the device computes batch i (on a CPU the same order
    costs nothing). Results come in the order of ``groups``."""
    pending: tuple[list[T], Callable[[], np.ndarray]] | None = None
    for group in groups:
        launched = (group, predictor.launch(make_batch(group)))
        if pending is not None:
            yield pending[0], pending[1]()
        pending = launched
    if pending is not None:
        yield pending[0], pending[1]()


def blend_windows(
    predictor: Predictor, window: np.ndarray, region: Region, patch: int, stride: int, batch_size: int | str
) -> np.ndarray:
    """Gaussian-weighted mean of the logits of every global-grid window overlapping ``region``.

    ``window`` holds ``region`` grown by ``patch`` on each side. Only the (K, h, w) sums for ``region`` are
    kept: memory is one chunk's logits, never the image's.
    """
    weight = gaussian_weight(patch)
    top, left = region.y0 - patch, region.x0 - patch  # image coordinates of window[:, 0, 0]
    sums = np.zeros((predictor.card.num_classes, region.height, region.width), np.float32)
    norm = np.zeros((region.height, region.width), np.float32)
    origins = window_origins(region, patch, stride)
    batch_size = windows_per_pass(predictor, batch_size, window.shape[0], patch, len(origins))
    groups = [origins[first : first + batch_size] for first in range(0, len(origins), batch_size)]

    def cut(group: list[tuple[int, int]]) -> np.ndarray:
        return np.stack([window[:, y - top : y - top + patch, x - left : x - left + patch] for y, x in group])

    for batch_origins, batch_logits in one_pass_ahead(predictor, groups, cut):
        for (y, x), logits in zip(batch_origins, batch_logits, strict=True):
            inside = clip(Region(y, y + patch, x, x + patch), region.y1, region.x1)
            inside = Region(max(inside.y0, region.y0), inside.y1, max(inside.x0, region.x0), inside.x1)
            src = inside.shift(-y, -x)
            dst = inside.shift(-region.y0, -region.x0)
            w = weight[src.y0 : src.y1, src.x0 : src.x1]
            sums[:, dst.y0 : dst.y1, dst.x0 : dst.x1] += logits[:, src.y0 : src.y1, src.x0 : src.x1] * w
            norm[dst.y0 : dst.y1, dst.x0 : dst.x1] += w
    return sums / norm


def trim_windows(predictor: Predictor, window: np.ndarray, halo: int, tile: int, batch_size: int | str) -> np.ndarray:
    """(K, h, w) logits of the centre of ``window`` (its halo trimmed), tile by tile, ``batch_size`` tiles per
    forward pass; each tile sees ``halo`` pixels of context on every side."""
    height, width = window.shape[1] - 2 * halo, window.shape[2] - 2 * halo
    edge = round_up(min(tile, max(height, width)) + 2 * halo, predictor.card.size_divisor)
    logits = np.zeros((predictor.card.num_classes, height, width), dtype=np.float32)
    tiles = list(tiles_in(Region(0, height, 0, width), tile))
    batch_size = windows_per_pass(predictor, batch_size, window.shape[0], edge, len(tiles))
    groups = [tiles[first : first + batch_size] for first in range(0, len(tiles), batch_size)]

    def cut(group: list[Region]) -> np.ndarray:
        return np.stack([_tile_input(window, t, halo, edge) for t in group])

    for batch_tiles, batch_logits in one_pass_ahead(predictor, groups, cut):
        for t, tile_logits in zip(batch_tiles, batch_logits, strict=True):
            logits[:, t.y0 : t.y1, t.x0 : t.x1] = tile_logits[:, halo : halo + t.height, halo : halo + t.width]
    return logits


def _tile_input(window: np.ndarray, tile: Region, halo: int, edge: int) -> np.ndarray:
    """The tile plus its halo, padded at the bottom/right to ``edge`` (beyond the halo, so it cannot
    change the kept pixels when the halo covers the receptive field)."""
    crop = window[:, tile.y0 : tile.y1 + 2 * halo, tile.x0 : tile.x1 + 2 * halo]
    return pad_to_region(crop, Region(0, crop.shape[1], 0, crop.shape[2]), Region(0, edge, 0, edge))


def label_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16)


def create_probabilities(path: str, height: int, width: int, chunk: int, num_classes: int) -> None:
    """An empty (K, Y, X) float16 Zarr v3 array on the chunk grid for class probabilities."""
    create_array(
        path,
        shape=(num_classes, height, width),
        dtype=np.float16,
        fill_value=0,
        overwrite=True,
        chunks=(num_classes, min(chunk, height), min(chunk, width)),
        dimension_names=("c", "y", "x"),
    )


def create_mask(path: str, height: int, width: int, chunk: int, num_classes: int) -> None:
    """An empty Zarr v3 label array on the chunk grid (overwrites what was there)."""
    create_array(
        path,
        shape=(height, width),
        chunks=(min(chunk, height), min(chunk, width)),
        dtype=label_dtype(num_classes),
        fill_value=0,
        overwrite=True,
        dimension_names=("y", "x"),
    )


def segment_image(job: ChunkJob, executor: Executor = local_executor) -> SegmentSummary:
    """Predict every chunk of ``job.source`` not yet marked done into ``job.outputs.mask`` (which must exist)."""
    regions = chunk_grid(job.source.height, job.source.width, job.windowing.chunk)
    todo = job.outputs.ledger.todo(regions) if job.outputs.ledger is not None else regions
    run = dask.delayed(segment_chunk, pure=False)
    results: list[ChunkResult] = executor([run(job, region) for region in todo], "infer")
    counts = np.sum([r.class_pixels for r in results], axis=0, dtype=np.int64) if results else np.zeros(0, np.int64)
    return SegmentSummary(
        chunks=len(regions),
        chunks_computed=len(todo),
        pixels=sum(r.pixels for r in results),
        task_seconds=sum(r.seconds for r in results),
        class_pixels=tuple(int(n) for n in np.atleast_1d(counts)),
        confidence_sum=sum(r.confidence_sum for r in results),
    )
