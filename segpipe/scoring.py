"""Streaming evaluation: a confusion matrix per chunk, summed in a tree. The whole mask is never in memory.

Each chunk's matrix is split in two: pixels within ``seam_band`` of an internal chunk border (where two tasks'
outputs meet) and the rest, so a user sees whether tiling hurts (``seam band`` vs ``interior`` scores). With a
foreground (``--foreground``), only its pixels are counted; ``ForegroundGrid.background_pixels`` counts the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from dask.delayed import delayed

from segpipe.config import EvalConfig
from segpipe.errors import InputError
from segpipe.executor import Executor, local_executor
from segpipe.io.images import ImageSource
from segpipe.metrics import confusion_matrix, instances_to_classes
from segpipe.objects.grow import InstanceRule
from segpipe.tiling import Region, chunk_grid

FAN_IN = 8
SEAM_BAND = 8


@dataclass(frozen=True)
class ForegroundGrid:
    """A low-resolution foreground laid on the mask's grid: each grid pixel takes the cell under its centre.

    Attributes:
        mask: (h, w) booleans, True: foreground.
        ratio: mask cells per grid pixel, (y, x).
    """

    mask: np.ndarray
    ratio: tuple[float, float]

    def _cells(self, start: int, stop: int, axis: int) -> np.ndarray:
        centres = (np.arange(start, stop) + 0.5) * self.ratio[axis]
        return np.asarray(np.minimum(centres.astype(np.int64), self.mask.shape[axis] - 1))

    def at(self, region: Region) -> np.ndarray:
        """(h, w) booleans of grid ``region``: True where it is foreground."""
        rows, cols = self._cells(region.y0, region.y1, 0), self._cells(region.x0, region.x1, 1)
        return np.asarray(self.mask[np.ix_(rows, cols)], dtype=bool)

    def touches(self, region: Region) -> bool:
        """Whether any pixel of grid ``region`` is foreground (from the cells under it, without a per-pixel mask)."""
        rows = np.unique(self._cells(region.y0, region.y1, 0))
        cols = np.unique(self._cells(region.x0, region.x1, 1))
        return bool(self.mask[np.ix_(rows, cols)].any())

    def background_pixels(self, height: int, width: int) -> int:
        """Grid pixels of a ``height`` x ``width`` grid outside the foreground, from the cells' row/column counts."""
        per_row = np.bincount(self._cells(0, height, 0), minlength=self.mask.shape[0])
        per_col = np.bincount(self._cells(0, width, 1), minlength=self.mask.shape[1])
        return int(per_row @ (~self.mask).astype(np.int64) @ per_col)


def seam_band_mask(region: Region, height: int, width: int, band: int) -> np.ndarray:
    """True for pixels of ``region`` within ``band`` pixels of one of its edges that is not the image border."""
    rows = np.arange(region.y0, region.y1)
    cols = np.arange(region.x0, region.x1)
    near_y = ((rows - region.y0 < band) & (region.y0 > 0)) | ((region.y1 - rows <= band) & (region.y1 < height))
    near_x = ((cols - region.x0 < band) & (region.x0 > 0)) | ((region.x1 - cols <= band) & (region.x1 < width))
    return near_y[:, None] | near_x[None, :]


def truth_classes(labels: np.ndarray, config: EvalConfig) -> np.ndarray:
    """Truth as class ids: instance ids mapped (``truth_mapping``) or binarised (``truth_instances``)."""
    if config.truth_mapping is not None:
        return instances_to_classes(labels, dict(config.truth_mapping))
    if config.truth_instances:
        return (labels > 0).astype(np.uint8)
    return labels


def chunk_confusion(
    prediction: ImageSource,
    truth: ImageSource,
    region: Region,
    num_classes: int,
    config: EvalConfig,
    seam_band: int = SEAM_BAND,
    fold: InstanceRule | None = None,
    foreground: ForegroundGrid | None = None,
) -> np.ndarray:
    """(2, K, K) confusion matrices of one chunk: [interior, seam band], of its ``foreground`` pixels if given.

    With ``fold``, predicted boundary pixels count as the rule's interior class (for truth that has no boundary).
    """
    truth_labels = _truth_labels(truth, region, config)
    predicted = prediction.read(*region)[0]
    shape = (prediction.height, prediction.width)
    return _confusion(truth, truth_labels, predicted, region, shape, num_classes, config, seam_band, fold, foreground)


def _truth_labels(truth: ImageSource, region: Region, config: EvalConfig) -> np.ndarray:
    try:
        return truth_classes(truth.read(*region)[0], config)
    except InputError as exc:
        raise InputError(f"{truth.path}: {exc}") from None


def _confusion(
    truth: ImageSource,
    truth_labels: np.ndarray,
    predicted: np.ndarray,
    region: Region,
    shape: tuple[int, int],
    num_classes: int,
    config: EvalConfig,
    seam_band: int,
    fold: InstanceRule | None,
    foreground: ForegroundGrid | None,
) -> np.ndarray:
    """``chunk_confusion`` of labels already read: ``shape`` is the whole mask's (height, width)."""
    if fold is not None:
        predicted = fold.fold(predicted)
    band = seam_band_mask(region, shape[0], shape[1], seam_band)
    interior = ~band
    if foreground is not None:
        keep = foreground.at(region)
        band, interior = band & keep, interior & keep
    try:
        return np.stack(
            [
                confusion_matrix(truth_labels[interior], predicted[interior], num_classes, config.ignore_index),
                confusion_matrix(truth_labels[band], predicted[band], num_classes, config.ignore_index),
            ]
        )
    except InputError as exc:
        raise InputError(f"{truth.path}: {exc} (at y={region.y0}, x={region.x0})") from None


@dataclass(frozen=True)
class ChunkScoring:
    """What an infer task needs to score each chunk it predicts against the truth, from the labels in memory.

    The same matrices as ``chunk_confusion`` of the written mask (the evaluate stage then reads only the chunks
    not scored this way). ``shape``: the mask's (height, width).
    """

    truth: ImageSource
    shape: tuple[int, int]
    num_classes: int
    config: EvalConfig
    seam_band: int = SEAM_BAND
    fold: InstanceRule | None = None

    def confusion(self, region: Region, predicted: np.ndarray) -> np.ndarray | None:
        """(2, K, K) of ``predicted`` (the chunk's labels) at ``region``; None when the truth cannot be scored.

        Any fault (an unreadable truth chunk, a label out of range) leaves the chunk to the evaluate stage, which
        reads it again and reports the fault as it always has: inference does not fail for the truth.
        """
        try:
            truth_labels = _truth_labels(self.truth, region, self.config)
            return _confusion(
                self.truth,
                truth_labels,
                predicted,
                region,
                self.shape,
                self.num_classes,
                self.config,
                self.seam_band,
                self.fold,
                None,
            )
        except Exception:  # noqa: BLE001 - reported by the evaluate stage's own read of this chunk
            return None


@dataclass(frozen=True)
class ScoredChunks:
    """Chunks scored where they were predicted: their (2, K, K) confusion matrices summed, and which they are."""

    confusion: np.ndarray
    regions: frozenset[Region]


def _sum(parts: Sequence[np.ndarray]) -> np.ndarray:
    return np.asarray(np.sum(parts, axis=0))


def tree_sum(parts: list[Any], fan_in: int = FAN_IN) -> Any:
    """Sum delayed arrays in a tree of ``fan_in``-way additions (no single task sees them all)."""
    add = delayed(_sum, pure=True)
    while len(parts) > 1:
        parts = [add(parts[i : i + fan_in]) for i in range(0, len(parts), fan_in)]
    return parts[0]


def evaluate_split(
    prediction: ImageSource,
    truth: ImageSource,
    num_classes: int,
    config: EvalConfig,
    chunk: int,
    executor: Executor = local_executor,
    seam_band: int = SEAM_BAND,
    fold: InstanceRule | None = None,
    foreground: ForegroundGrid | None = None,
    scored: ScoredChunks | None = None,
) -> np.ndarray:
    """(2, K, K) confusion matrices [interior, seam band] of ``prediction`` against ``truth``, chunk by chunk.

    The chunks are those of the grid of edge ``chunk``; ``fold`` as for ``chunk_confusion``; with a
    ``foreground``, only its pixels are counted. Chunks in ``scored`` (scored by the infer tasks, with the same
    truth, fold and no foreground) are not read again: their summed matrices are added.
    """
    task = delayed(chunk_confusion, pure=True)
    regions = chunk_grid(prediction.height, prediction.width, chunk)
    if scored is not None:  # scored by the infer tasks as they wrote them: only the others are read here
        regions = [region for region in regions if region not in scored.regions]
    total = np.zeros((2, num_classes, num_classes), np.int64) if scored is None else scored.confusion
    if foreground is not None:  # a chunk with no foreground pixel counts nothing: neither it nor its truth is read
        regions = [region for region in regions if foreground.touches(region)]
    if not regions:
        return np.asarray(total, dtype=np.int64)
    shared = None if foreground is None else delayed(foreground, traverse=False)  # one graph key, not one per task
    parts = [task(prediction, truth, region, num_classes, config, seam_band, fold, shared) for region in regions]
    (computed,) = executor([tree_sum(parts)], "evaluate")
    return np.asarray(total + np.asarray(computed), dtype=np.int64)


def evaluate(
    prediction: ImageSource,
    truth: ImageSource,
    num_classes: int,
    config: EvalConfig,
    chunk: int,
    executor: Executor = local_executor,
) -> np.ndarray:
    """The (K, K) confusion matrix of ``prediction`` against ``truth``, computed chunk by chunk."""
    return np.asarray(evaluate_split(prediction, truth, num_classes, config, chunk, executor).sum(axis=0))
