"""Tiled inference: each task owns a run of output chunks and writes only those.

A task reads each chunk with the context its windows need; inside a task, reading, the model and writing overlap.

Knows nothing of Prefect or distributed: it builds ``dask.delayed`` tasks and hands them to an executor
(plain ``dask.compute`` by default; the flows pass one that runs on a distributed cluster).
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
import zarr
from dask.base import annotate
from dask.delayed import delayed

from segpipe import normalize
from segpipe.config import AUTO, InferenceConfig
from segpipe.executor import Executor, local_executor, task_slots
from segpipe.io.blocks import cached_blocks
from segpipe.io.first_level import FirstLevel, FirstLevelWriter, block_major
from segpipe.io.images import ImageSource
from segpipe.io.ledger import ChunkLedger
from segpipe.io.omezarr import halved
from segpipe.models import ModelRef, Predictor, load_predictor
from segpipe.models.card import ModelCard
from segpipe.preprocessing import preprocess
from segpipe.scoring import ChunkScoring, ScoredChunks
from segpipe.storage import OWN_FORMAT, create_array, open_array
from segpipe.tiling import Region, chunk_grid, clip, pad_to_region
from segpipe.windows import BlendWindows, ChunkWindows, TrimWindows, label_dtype, window_count

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
    """Where a chunk's results go: the label mask, optional probabilities and the ledger.

    ``probabilities`` is a (K, Y, X) float16 array's URL; ``ledger`` is where a finished chunk is marked;
    ``uncertainty`` a (Y, X) float16 array's URL, for each pixel's softmax entropy; ``first_level``: level 1 of
    the image and mask pyramids, written from the chunks in memory (``segpipe.io.first_level``).
    """

    mask: str
    probabilities: str | None = None
    ledger: ChunkLedger | None = None
    uncertainty: str | None = None
    first_level: FirstLevel | None = None


@dataclass(frozen=True)
class ChunkJob:
    """Everything one chunk task needs; small and picklable (URLs and settings, never pixels or weights).

    ``stats``: the image's statistics, measured once per image, for the card's preprocessing steps that read
    them (``percentile`` normalization, ``scale_range``, a measured ``zero_mean_unit_variance``).
    ``background``: per chunk, its ``trim`` tiles (chunk coordinates) with no foreground within a halo, left as
    background without being computed (``segpipe.io.foreground.background_tiles``).
    ``scoring``: the truth each chunk is scored against as it is written (``TaskResult.confusion``), or None.
    """

    source: ImageSource
    model: ModelRef
    windowing: Windowing
    inference: InferenceConfig
    outputs: ChunkOutputs
    stats: normalize.BandStats | None = None
    background: Mapping[Region, frozenset[Region]] = field(default_factory=dict)
    scoring: ChunkScoring | None = None

    def for_chunks(self, regions: Sequence[Region]) -> ChunkJob:
        """This job with only the background tiles of ``regions`` (what one task's chunks need)."""
        if not self.background:
            return self
        return replace(self, background={r: self.background[r] for r in regions if r in self.background})


@dataclass(frozen=True)
class TaskResult:
    """What one infer task did: chunks, pixels, wall seconds, predicted pixels per class and summed confidence.

    ``confidence_sum`` is the softmax probability of the chosen class, summed over the pixels.
    """

    chunks: int
    pixels: int
    seconds: float
    class_pixels: tuple[int, ...]
    confidence_sum: float
    entropy_sum: float = 0.0
    uncertain_pixels: int = 0
    compile_seconds: float = 0.0  # of the model's compiles this task ran (``--compile inductor``: once per worker)
    confusion: np.ndarray | None = None  # with scoring: (2, K, K) summed over the chunks in ``scored``
    scored: tuple[Region, ...] = ()


@dataclass(frozen=True)
class WrittenChunk:
    """One chunk written and marked done: where, its computed pixels, predicted pixels per class, summed confidence.

    Pixels of skipped tiles (written as background, never computed) are counted in neither.
    """

    region: Region
    pixels: int
    class_pixels: tuple[int, ...]
    confidence_sum: float
    entropy_sum: float = 0.0
    uncertain_pixels: int = 0
    confusion: np.ndarray | None = None  # with scoring: the chunk's (2, K, K), None when its truth could not be


@dataclass(frozen=True)
class SegmentSummary:
    """The chunks of one image: how many, how many computed now, and what the computed ones predicted."""

    chunks: int
    chunks_computed: int
    pixels: int
    task_seconds: float
    class_pixels: tuple[int, ...]
    confidence_sum: float
    entropy_sum: float = 0.0
    uncertain_pixels: int = 0
    compile_seconds: float = 0.0  # summed over tasks: the model's compiles, part of their seconds
    scored: ScoredChunks | None = None  # with scoring: the chunks scored as they were written, their sum


READ_AHEAD = 1  # chunks read and normalised while the model runs on the current one
WRITES_BEHIND = 1  # finished chunks that may wait for the writer while the model goes on
MAX_CHUNKS_PER_TASK = 16  # a task's chunks: few enough that a lost task costs little, many enough to batch across


def task_runs(regions: Sequence[Region], slots: int) -> list[Sequence[Region]]:
    """``regions`` cut into runs of consecutive chunks, one per infer task, the runs shrinking towards the end.

    Guided self-scheduling: each run takes about half a slot's share of what is left (at most
    ``MAX_CHUNKS_PER_TASK``), so the first tasks batch many chunks and the last ones a single chunk each: the slot
    that finishes early picks up small runs, and the stage ends with the slots at most about one chunk apart
    (equal runs left one slot idle for up to a whole run's time).
    """
    runs: list[Sequence[Region]] = []
    start, slots = 0, max(slots, 1)
    while start < len(regions):
        left = len(regions) - start
        size = max(1, min(MAX_CHUNKS_PER_TASK, math.ceil(left / (2 * slots))))
        runs.append(regions[start : start + size])
        start += size
    return runs


def read_window(
    source: ImageSource, region: Region, halo: int, pad_mode: str = "symmetric", stored: Any = None
) -> np.ndarray:
    """(C, h + 2 halo, w + 2 halo) pixels around ``region``; padded (``pad_mode``) only past the image border.

    ``stored``: the source's array, already opened (``ImageSource.stored_array``).
    """
    want = region.grow(halo)
    have = clip(want, source.height, source.width)
    return pad_to_region(source.read(*have, stored=stored), have, want, pad_mode)


def chunk_windows(job: ChunkJob, card: ModelCard, region: Region, stored: Any = None) -> ChunkWindows:
    """The model inputs of chunk ``region``, by the job's stitch mode.

    Its pixels and the context around them, read (from ``stored``, the source's opened array, when given) and
    put through the card's preprocessing.
    """
    win, keep, bias = job.windowing, bool(job.outputs.probabilities), card.postprocessing.label_bias()
    context = win.tile if win.stitch == "gaussian" else win.halo
    raw = read_window(job.source, region, context, win.pad_mode, stored)
    window = preprocess(raw, card.input_steps, job.stats)
    windows: ChunkWindows
    if win.stitch == "gaussian":
        windows = BlendWindows(window, region, win.tile, win.stride, card.num_classes, keep, bias)
    else:
        divisor, classes = card.size_divisor, card.num_classes
        skip = job.background.get(region, frozenset())
        windows = TrimWindows(window, region, win.halo, win.tile, divisor, classes, True, keep, bias, skip)
    windows.keep_uncertainty = bool(job.outputs.uncertainty)
    if job.outputs.first_level is not None:  # the chunk's own pixels, without context: its part of level 1
        core = raw[:, context : context + region.height, context : context + region.width]
        windows.halved_pixels = halved(core, labels=False)
    return windows


class OpenedOutputs:
    """A task's output arrays, each opened once, on first use (by the writer thread)."""

    def __init__(self, outputs: ChunkOutputs) -> None:
        """Keep the outputs' URLs; nothing is opened yet."""
        self.outputs = outputs

    @functools.cached_property
    def mask(self) -> zarr.Array[Any]:
        """The label mask, opened for writing."""
        return open_array(self.outputs.mask, mode="r+", zarr_format=OWN_FORMAT)

    @functools.cached_property
    def probabilities(self) -> zarr.Array[Any]:
        """The probabilities array, opened for writing (only when the outputs name one)."""
        assert self.outputs.probabilities
        return open_array(self.outputs.probabilities, mode="r+", zarr_format=OWN_FORMAT)

    @functools.cached_property
    def uncertainty(self) -> zarr.Array[Any]:
        """The uncertainty array, opened for writing (only when the outputs name one)."""
        assert self.outputs.uncertainty
        return open_array(self.outputs.uncertainty, mode="r+", zarr_format=OWN_FORMAT)


def windows_per_pass(predictor: Predictor, batch_size: int | str, channels: int, edge: int, count: int) -> int:
    """``batch_size``, or for ``auto`` the predictor's choice for (channels, edge, edge) windows, at most ``count``."""
    return predictor.batch_size_for(channels, edge, count) if batch_size == AUTO else int(batch_size)


def one_pass_ahead(
    predictor: Predictor, groups: Iterable[list[T]], make_batch: Callable[[list[T]], np.ndarray]
) -> Iterator[tuple[list[T], np.ndarray]]:
    """Each group with its logits, the next group's batch cut and launched before this one's are collected.

    On a GPU the host cuts and normalises batch i + 1 while the device computes batch i (on a CPU the same order
    costs nothing). Results come in the order of ``groups``.
    """
    pending: tuple[list[T], Callable[[], np.ndarray]] | None = None
    for group in groups:
        launched = (group, predictor.launch(make_batch(group)))
        if pending is not None:
            yield pending[0], pending[1]()
        pending = launched
    if pending is not None:
        yield pending[0], pending[1]()


def predict_chunks(
    predictor: Predictor, batch_size: int | str, chunks: Iterable[ChunkWindows], windows: int
) -> Iterator[ChunkWindows]:
    """Each of ``chunks`` once all its windows' logits are in place, in order.

    Batches of ``batch_size`` windows (``auto``: the predictor's choice, at most ``windows``, the stream's total)
    run across chunk borders, so a GPU is fed full batches even when a chunk holds one window; a batch holds
    windows of one edge only (a chunk at the image border may have smaller ones). One pass is in flight while
    the next batch is cut. Chunks are pulled from ``chunks`` only as their windows are needed.
    """
    opened: deque[ChunkWindows] = deque()  # chunks whose windows are being cut or predicted, oldest first
    per_pass: list[int] = []

    def batches() -> Iterator[list[tuple[ChunkWindows, int]]]:
        batch: list[tuple[ChunkWindows, int]] = []
        for chunk in chunks:
            opened.append(chunk)
            if not per_pass:
                per_pass.append(windows_per_pass(predictor, batch_size, chunk.channels, chunk.edge, windows))
            if batch and batch[0][0].edge != chunk.edge:
                yield batch
                batch = []
            for index in range(len(chunk)):
                batch.append((chunk, index))
                if len(batch) == per_pass[0]:  # launched at once: not after the next chunk is pulled
                    yield batch
                    batch = []
        if batch:
            yield batch

    def cut(batch: list[tuple[ChunkWindows, int]]) -> np.ndarray:
        return np.stack([chunk.cut(index) for chunk, index in batch])

    def finished(everything: bool = False) -> Iterator[ChunkWindows]:
        while opened and (everything or opened[0].complete):
            chunk = opened.popleft()
            chunk.drop_input()
            yield chunk

    for batch, logits in one_pass_ahead(predictor, batches(), cut):
        for (chunk, index), window_logits in zip(batch, logits, strict=True):
            chunk.add(index, window_logits)
        yield from finished()
    yield from finished(everything=True)  # chunks after the last batch have no window (every tile skipped)


def prefetched(pool: ThreadPoolExecutor, loads: Iterable[Callable[[], T]], ahead: int = READ_AHEAD) -> Iterator[T]:
    """The results of ``loads``, in order, each started on ``pool`` ``ahead`` items before it is wanted."""
    queue: deque[Future[T]] = deque()
    pending = iter(loads)
    for load in itertools.islice(pending, max(ahead, 1)):
        queue.append(pool.submit(load))
    while queue:
        wanted = queue.popleft()
        following = next(pending, None)
        if following is not None:  # started before waiting, so that it runs while the caller uses this one
            queue.append(pool.submit(following))
        yield wanted.result()


def write_chunk(
    outputs: OpenedOutputs,
    chunk: ChunkWindows,
    scoring: ChunkScoring | None = None,
    first_level: FirstLevelWriter | None = None,
) -> WrittenChunk:
    """Write a finished chunk's labels (and probabilities, when asked) to the outputs, then mark the chunk done.

    A task killed between the two leaves the chunk to be rewritten, never half-marked. With ``scoring``, the labels
    in memory are scored against the truth too; with ``first_level``, the chunk goes to its level-1 block.
    """
    region, predicted = chunk.region, chunk.prediction()
    counts = np.bincount(predicted.labels.ravel(), minlength=chunk.num_classes)
    counts[0] -= chunk.skipped_pixels  # only computed pixels are counted
    if outputs.outputs.ledger is not None:
        outputs.outputs.ledger.check_fence()
    outputs.mask[region.y0 : region.y1, region.x0 : region.x1] = predicted.labels
    if outputs.outputs.probabilities and predicted.probabilities is not None:
        outputs.probabilities[:, region.y0 : region.y1, region.x0 : region.x1] = predicted.probabilities
    if outputs.outputs.uncertainty and predicted.uncertainty is not None:
        outputs.uncertainty[region.y0 : region.y1, region.x0 : region.x1] = predicted.uncertainty
    if outputs.outputs.ledger is not None:
        outputs.outputs.ledger.mark_done(region)
    if first_level is not None and chunk.halved_pixels is not None:
        first_level.add(region, chunk.halved_pixels, predicted.labels)
    confusion = None if scoring is None else scoring.confusion(region, predicted.labels)
    return WrittenChunk(
        region=region,
        pixels=region.height * region.width - chunk.skipped_pixels,
        class_pixels=tuple(int(n) for n in counts),
        confidence_sum=predicted.confidence_sum,
        entropy_sum=predicted.entropy_sum,
        uncertain_pixels=predicted.uncertain_pixels,
        confusion=confusion,
    )


def segment_chunks(job: ChunkJob, regions: Sequence[Region]) -> TaskResult:
    """Predict the chunks ``regions`` into the mask, each marked done once written; one infer task.

    Three threads overlap: a reader reads and normalises chunk i + 1 while the model runs on chunk i's windows
    (batched across chunk borders) and a writer writes chunk i - 1 behind. Idempotent: a retried or rescheduled
    task (worker death) rewrites the same bytes.
    """
    start = time.perf_counter()
    inference = job.inference
    predictor = load_predictor(job.model, inference.device, inference.torch_threads, inference.compile)
    predictor = predictor.at_precision(inference.precision)
    if inference.tta != "none":  # a predictor stand-in without TTA support runs as it is
        predictor = predictor.with_tta(inference.tta)
    compiled_before = set(predictor.compile_seconds)
    win = job.windowing
    windows = sum(window_count(region, win.stitch, win.tile, win.stride) for region in regions)
    windows = max(1, windows - sum(len(job.background.get(region, ())) for region in regions))
    # opened once per task, in the reader thread; cached, a stored chunk shared by windows is decoded once
    stored = functools.cache(lambda: cached_blocks(job.source.stored_array()))
    loads = (lambda region=region: chunk_windows(job, predictor.card, region, stored()) for region in regions)
    outputs = OpenedOutputs(job.outputs)
    level = job.outputs.first_level
    first_level = level.writer(regions, job.source.height, job.source.width) if level is not None else None
    writes: list[Future[WrittenChunk]] = []
    with ThreadPoolExecutor(1, "segpipe-read") as reader, ThreadPoolExecutor(1, "segpipe-write") as writer:
        inputs = prefetched(reader, loads)
        for chunk in predict_chunks(predictor, inference.batch_size, inputs, windows):
            if len(writes) >= WRITES_BEHIND:  # the writer runs in order: at most WRITES_BEHIND are left waiting
                writes[-WRITES_BEHIND].result()
            writes.append(writer.submit(write_chunk, outputs, chunk, job.scoring, first_level))
        written = [write.result() for write in writes]
    scored = [(w.region, w.confusion) for w in written if w.confusion is not None]
    return TaskResult(
        chunks=len(written),
        pixels=sum(w.pixels for w in written),
        seconds=time.perf_counter() - start,
        class_pixels=_summed(w.class_pixels for w in written),
        confidence_sum=sum(w.confidence_sum for w in written),
        entropy_sum=sum(w.entropy_sum for w in written),
        uncertain_pixels=sum(w.uncertain_pixels for w in written),
        compile_seconds=predictor.compiled_here(compiled_before),
        confusion=np.asarray(np.sum([m for _, m in scored], axis=0, dtype=np.int64)) if scored else None,
        scored=tuple(region for region, _ in scored),
    )


def _summed(counts: Iterable[tuple[int, ...]]) -> tuple[int, ...]:
    """Element-wise sum of per-class pixel counts (empty for none)."""
    rows = list(counts)
    return tuple(int(n) for n in np.atleast_1d(np.sum(rows, axis=0, dtype=np.int64))) if rows else ()


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


def create_uncertainty(path: str, height: int, width: int, chunk: int) -> None:
    """An empty (Y, X) float16 Zarr v3 array on the chunk grid for each pixel's softmax entropy."""
    chunks = (min(chunk, height), min(chunk, width))
    create_array(path, shape=(height, width), dtype=np.float16, fill_value=0, overwrite=True, chunks=chunks)


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


def _in_order(run: Any, job: ChunkJob, regions: Sequence[Region], index: int) -> Any:
    """Task ``index`` of an image, annotated so that a distributed scheduler starts the image's tasks in order.

    (Its own ordering of independent tasks is arbitrary; the shrinking runs of ``task_runs`` need the large ones
    first.) Later tasks get lower priorities than the default 0, so other images' stages are not held back.
    """
    with annotate(priority=-index):
        return run(job.for_chunks(regions), regions)


def segment_image(job: ChunkJob, executor: Executor = local_executor, per_task: int | None = None) -> SegmentSummary:
    """Predict every chunk of ``job.source`` not yet marked done into ``job.outputs.mask`` (which must exist).

    Consecutive chunks (row-major; block by block of 2 x 2 with ``first_level``, so that a task holds whole blocks)
    are grouped into infer tasks of ``per_task`` chunks (default: the shrinking runs of ``task_runs`` for the
    executor's task slots), so that a task can read ahead and batch across them.
    """
    regions = chunk_grid(job.source.height, job.source.width, job.windowing.chunk)
    if job.outputs.first_level is not None:
        regions = block_major(regions, job.windowing.chunk)
    todo = job.outputs.ledger.todo(regions) if job.outputs.ledger is not None else regions
    run = delayed(segment_chunks, pure=False)
    tasks: list[Sequence[Region]]
    if per_task:
        tasks = [todo[i : i + per_task] for i in range(0, len(todo), per_task)]
    else:
        tasks = task_runs(todo, task_slots(executor, "infer"))
    results: list[TaskResult] = executor([_in_order(run, job, runs, i) for i, runs in enumerate(tasks)], "infer")
    return SegmentSummary(
        chunks=len(regions),
        chunks_computed=sum(r.chunks for r in results),
        pixels=sum(r.pixels for r in results),
        task_seconds=sum(r.seconds for r in results),
        class_pixels=_summed(r.class_pixels for r in results),
        confidence_sum=sum(r.confidence_sum for r in results),
        entropy_sum=sum(r.entropy_sum for r in results),
        uncertain_pixels=sum(r.uncertain_pixels for r in results),
        compile_seconds=sum(r.compile_seconds for r in results),
        scored=_scored(job, results),
    )


def _scored(job: ChunkJob, results: Sequence[TaskResult]) -> ScoredChunks | None:
    """The chunks the tasks scored and their summed matrices; None without scoring."""
    if job.scoring is None:
        return None
    k = job.scoring.num_classes
    matrices = [r.confusion for r in results if r.confusion is not None]
    total = np.sum(matrices, axis=0, dtype=np.int64) if matrices else np.zeros((2, k, k), np.int64)
    return ScoredChunks(np.asarray(total, dtype=np.int64), frozenset(region for r in results for region in r.scored))
