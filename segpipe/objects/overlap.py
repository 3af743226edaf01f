"""Object metrics at any image size, from per-block overlap counts.

Per block (worker side, pure) ``overlap_counts`` counts the pixels of every true object, every predicted
object and every (true, predicted) pair that overlaps there; counts are additive over blocks, so
``merge_counts`` (driver) adds them and ``to_overlap`` gives the ``ObjectOverlap`` that
``segpipe.objects.matching.object_overlap`` computes on the whole images, identical (same renumbering, pair
order and IoU arithmetic), hence identical matching and metrics (``metrics_from_overlap``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from segpipe.errors import InputError
from segpipe.objects.grid import UINT32_MAX, blocks_of
from segpipe.objects.matching import THRESHOLDS, ObjectOverlap, metrics_from_overlap


@dataclass(frozen=True)
class OverlapCounts:
    """Pixel counts over some pixels: per true id, per predicted id, per overlapping pair (all sorted).

    Attributes:
        true_ids, true_area: Nonzero true ids and their pixel counts.
        pred_ids, pred_area: Nonzero predicted ids and their pixel counts.
        pair_true, pair_pred, pair_count: Overlapping (true, predicted) id pairs, by (true, predicted), and
            their shared pixel counts.
    """

    true_ids: np.ndarray
    true_area: np.ndarray
    pred_ids: np.ndarray
    pred_area: np.ndarray
    pair_true: np.ndarray
    pair_pred: np.ndarray
    pair_count: np.ndarray


def _ids(block: Any, what: str, limit: int | None) -> np.ndarray:
    """A block of instance ids as flat uint64; InputError on non-integers, negatives or ids above ``limit``."""
    values = np.asarray(block)
    if values.dtype.kind not in "uib":
        raise InputError(f"{what} instance ids must be integers, found {values.dtype}")
    if values.size and values.dtype.kind == "i" and values.min() < 0:
        raise InputError(f"{what} instance id {int(values.min())} is negative")
    if limit is not None and values.size and int(values.max()) > limit:
        raise InputError(f"{what} instance id {int(values.max())} is beyond uint32 (at most {limit})")
    return values.astype(np.uint64).ravel()


def _tally(ids: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ids and their counts (or summed weights)."""
    found, inv = np.unique(ids, return_inverse=True)
    return found, np.bincount(inv, weights=weights, minlength=found.size).astype(np.int64)


def _pairs(t: np.ndarray, p: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Distinct (t, p) pairs sorted by t then p, with their counts (or summed weights)."""
    if not t.size:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64)
    if int(p.max()) <= UINT32_MAX:  # t is within uint32 (checked), so one uint64 key holds the pair
        keys, counts = _tally((t << np.uint64(32)) | p, weights)
        return keys >> np.uint64(32), keys & np.uint64(UINT32_MAX), counts
    both, inv = np.unique(np.stack([t, p], axis=1), axis=0, return_inverse=True)
    return both[:, 0], both[:, 1], np.bincount(inv.ravel(), weights=weights, minlength=len(both)).astype(np.int64)


def overlap_counts(truth: Any, prediction: Any) -> OverlapCounts:
    """The overlap counts of one block (worker side, pure).

    Args:
        truth: The block of instance truth (ids 0..2**32 - 1; 0 is background).
        prediction: The same block of predicted instance ids (e.g. ``segpipe.objects.components``' id image).

    Returns:
        Areas per id and overlap per pair within the block.
    """
    if np.shape(truth) != np.shape(prediction):
        raise InputError(f"truth block is {np.shape(truth)} but prediction block is {np.shape(prediction)}")
    t, p = _ids(truth, "truth", UINT32_MAX), _ids(prediction, "predicted", None)
    true_ids, true_area = _tally(t[t > 0])
    pred_ids, pred_area = _tally(p[p > 0])
    both = (t > 0) & (p > 0)
    pair_true, pair_pred, pair_count = _pairs(t[both], p[both])
    return OverlapCounts(true_ids, true_area, pred_ids, pred_area, pair_true, pair_pred, pair_count)


def merge_counts(parts: Sequence[OverlapCounts]) -> OverlapCounts:
    """Add the overlap counts of several blocks (driver side)."""
    if not parts:
        raise InputError("no overlap counts to merge")

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(part, name) for part in parts])

    true_ids, true_area = _tally(cat("true_ids"), cat("true_area").astype(np.float64))
    pred_ids, pred_area = _tally(cat("pred_ids"), cat("pred_area").astype(np.float64))
    pair_true, pair_pred, pair_count = _pairs(cat("pair_true"), cat("pair_pred"), cat("pair_count").astype(np.float64))
    return OverlapCounts(true_ids, true_area, pred_ids, pred_area, pair_true, pair_pred, pair_count)


def to_overlap(counts: OverlapCounts) -> ObjectOverlap:
    """The sparse IoU matrix with objects numbered 1..n in order of their ids, as ``object_overlap`` gives."""
    t = np.searchsorted(counts.true_ids, counts.pair_true).astype(np.int64)
    p = np.searchsorted(counts.pred_ids, counts.pair_pred).astype(np.int64)
    union = counts.true_area[t] + counts.pred_area[p] - counts.pair_count
    return ObjectOverlap(
        n_true=int(counts.true_ids.size),
        n_pred=int(counts.pred_ids.size),
        true_ids=t + 1,
        pred_ids=p + 1,
        iou=counts.pair_count / union,
    )


def chunked_object_metrics(
    truth: Any, prediction: Any, thresholds: Sequence[float] = THRESHOLDS, chunks: Any = None
) -> list[dict[str, Any]]:
    """``object_metrics`` of two instance id images, read block by block (serially).

    Args:
        truth: Instance truth, 2-D, sliceable (zarr, numpy, ...).
        prediction: Predicted instance ids of the same shape.
        thresholds: IoU thresholds (>= 0.5).
        chunks: Block shape; default ``prediction.chunks``.

    Returns:
        One row per threshold, equal to ``segpipe.objects.object_metrics`` on the whole images.
    """
    if tuple(truth.shape) != tuple(prediction.shape):
        raise InputError(f"truth is {tuple(truth.shape)} but prediction is {tuple(prediction.shape)}")
    parts = [overlap_counts(truth[b.slices], prediction[b.slices]) for b in blocks_of(prediction, chunks)]
    return metrics_from_overlap(to_overlap(merge_counts(parts)), thresholds)
