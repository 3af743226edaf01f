"""Object-level metrics for whole instance masks, in the sense of stardist's ``matching``. Pure numpy and scipy.

A predicted object matches a true object when their IoU >= the threshold (>=, as stardist). For thresholds
>= 0.5 a match is one-to-one by construction: IoU > 0.5 forces each object to hold more than half of the
other, so no object can have two such partners; at exactly 0.5 an object may tie with two partners that each
make up exactly half of it, and any one of them gives the same count and matched IoU. Greedy matching by
descending IoU is therefore optimal (it equals stardist's ``linear_sum_assignment``), and thresholds below
0.5, where it would not be, are refused.

Per threshold: ``tp`` matched pairs, ``fp`` = predicted - tp, ``fn`` = true - tp,
precision = tp / predicted, recall = tp / true, f1 = 2 tp / (2 tp + fp + fn), ``mean_matched_iou`` = mean IoU
of the matched pairs, ``panoptic_quality`` = sum of matched IoU / (tp + fp / 2 + fn / 2).
Where stardist reports 0 for an undefined ratio (no predicted objects: precision; no true objects: recall;
neither: f1 and panoptic quality; no match: mean matched IoU), segpipe reports NaN; defined values agree.

Connected components (``label_objects``) use 4-connectivity by default (pixels sharing an edge), 8 on request
(sharing an edge or a corner). Touching objects of one class merge into one component: a semantic
prediction cannot separate them, which is what object metrics on it should show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from segpipe.errors import ConfigError, InputError
from segpipe.metrics import distinct_ids

THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(9))
"""0.5, 0.55, ..., 0.9."""

COUNTS = ("tp", "fp", "fn", "n_true", "n_pred", "sum_matched_iou")


@dataclass(frozen=True)
class ObjectOverlap:
    """Every overlapping (true, predicted) object pair with its IoU; objects are numbered 1..n."""

    n_true: int
    n_pred: int
    true_ids: np.ndarray
    pred_ids: np.ndarray
    iou: np.ndarray


def label_objects(mask: np.ndarray, connectivity: int = 4, foreground: int | None = None) -> tuple[np.ndarray, int]:
    """Connected components (int32 labels 1..n, 0 background) of ``mask == foreground``.

    Of ``mask > 0`` when ``foreground`` is None; ``connectivity`` 4 or 8.
    """
    if connectivity not in (4, 8):
        raise ConfigError(f"connectivity must be 4 or 8, got {connectivity}")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"object labelling needs a 2-D mask, got shape {mask.shape}")
    binary = mask > 0 if foreground is None else mask == foreground
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    labels, count = ndimage.label(binary, structure=structure, output=np.int32)
    return labels, int(count)


def sequential(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Instance labels renumbered 1..n in order of their ids (0 stays background), flat uint32, and n."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "uib":
        raise InputError(f"instance labels must be integers, found {labels.dtype}")
    if labels.size and labels.min() < 0:
        raise InputError(f"instance id {int(labels.min())} is negative")
    ids, index = distinct_ids(labels)
    offset = 0 if ids.size and ids[0] == 0 else 1
    return index.astype(np.uint32) + np.uint32(offset), int(ids.size - 1 + offset)


def object_overlap(truth: np.ndarray, prediction: np.ndarray) -> ObjectOverlap:
    """The sparse IoU matrix of two instance label images of one shape (any ids; 0 is background)."""
    if np.shape(truth) != np.shape(prediction):
        raise InputError(f"truth is {np.shape(truth)} but prediction is {np.shape(prediction)}")
    t, n_true = sequential(truth)
    p, n_pred = sequential(prediction)
    true_area = np.bincount(t, minlength=n_true + 1)
    pred_area = np.bincount(p, minlength=n_pred + 1)
    both = (t > 0) & (p > 0)
    keys, intersection = _count_pairs(t[both], p[both], n_pred + 1)
    true_ids, pred_ids = keys // (n_pred + 1), keys % (n_pred + 1)
    union = true_area[true_ids] + pred_area[pred_ids] - intersection
    return ObjectOverlap(n_true, n_pred, true_ids, pred_ids, intersection / union)


def _count_pairs(t: np.ndarray, p: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys ``t * stride + p`` and their counts.

    Runs of equal keys collapse first (an object's row is one run), then the runs are sorted.
    """
    if not t.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    wide = np.dtype(np.uint32 if (int(t.max()) + 1) * stride < 1 << 32 else np.uint64)
    keys = t.astype(wide)
    keys *= stride
    keys += p.astype(wide)
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    lengths = np.diff(np.append(starts, keys.size))
    distinct, inverse = np.unique(keys[starts], return_inverse=True)
    counts = np.bincount(inverse, weights=lengths, minlength=distinct.size)
    return distinct.astype(np.int64), counts.astype(np.int64)


def match_objects(overlap: ObjectOverlap, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matched (true ids, predicted ids, IoU) with IoU >= ``threshold`` (>= 0.5), best first."""
    if not 0.5 <= threshold <= 1.0:
        raise ConfigError(
            f"object matching threshold must lie in 0.5..1 (greedy matching is exact there), got {threshold}"
        )
    keep = overlap.iou >= threshold
    order = np.argsort(-overlap.iou[keep], kind="stable")
    t, p, iou = overlap.true_ids[keep][order], overlap.pred_ids[keep][order], overlap.iou[keep][order]
    first = np.sort(np.unique(t, return_index=True)[1])
    t, p, iou = t[first], p[first], iou[first]
    first = np.sort(np.unique(p, return_index=True)[1])
    return t[first], p[first], iou[first]


def object_metrics(
    truth: np.ndarray, prediction: np.ndarray, thresholds: Sequence[float] = THRESHOLDS
) -> list[dict[str, Any]]:
    """Object metrics per IoU threshold of two instance label images.

    Per threshold: tp, fp, fn, precision, recall, f1, mean_matched_iou, panoptic_quality and the counts.
    """
    return metrics_from_overlap(object_overlap(truth, prediction), thresholds)


def metrics_from_overlap(overlap: ObjectOverlap, thresholds: Sequence[float] = THRESHOLDS) -> list[dict[str, Any]]:
    """Object metrics per IoU threshold of an overlap.

    The overlap is computed whole (``object_overlap``) or merged from chunks (``segpipe.objects.overlap``).
    """
    results = []
    for threshold in thresholds:
        _, _, iou = match_objects(overlap, threshold)
        tp = int(iou.size)
        counts = {
            "tp": tp,
            "fp": overlap.n_pred - tp,
            "fn": overlap.n_true - tp,
            "n_true": overlap.n_true,
            "n_pred": overlap.n_pred,
            "sum_matched_iou": float(iou.sum()),
        }
        results.append(_rates(float(threshold), counts))
    return results


def score_objects(
    truth_instances: np.ndarray,
    prediction: np.ndarray,
    foreground: int | None = None,
    connectivity: int = 4,
    thresholds: Sequence[float] = THRESHOLDS,
) -> list[dict[str, Any]]:
    """Object metrics of a semantic ``prediction`` against instance-labelled truth.

    The prediction's objects are its connected components of ``foreground``, or of every class > 0.
    """
    labels, _ = label_objects(prediction, connectivity, foreground)
    return object_metrics(truth_instances, labels, thresholds)


def sum_object_metrics(per_image: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Dataset object metrics: counts and matched IoU summed over images per threshold, ratios recomputed.

    As stardist's ``matching_dataset(by_image=False)``.
    """
    if not per_image:
        raise InputError("no object metrics to sum")
    summed = []
    for rows in zip(*per_image, strict=True):
        thresholds = {row["threshold"] for row in rows}
        if len(thresholds) != 1:
            raise InputError(f"object metrics at different thresholds: {sorted(thresholds)}")
        counts = {key: sum(row[key] for row in rows) for key in COUNTS}
        summed.append(_rates(rows[0]["threshold"], counts))
    return summed


def _rates(threshold: float, counts: dict[str, Any]) -> dict[str, Any]:
    tp, fp, fn, matched = counts["tp"], counts["fp"], counts["fn"], counts["sum_matched_iou"]
    return {
        "threshold": threshold,
        **counts,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "mean_matched_iou": _ratio(matched, tp),
        "panoptic_quality": _ratio(matched, tp + fp / 2 + fn / 2),
    }


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else float("nan")
