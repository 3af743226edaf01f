"""Segmentation metrics from confusion matrices.

Pure numpy. The matrices are built in ``segpipe.confusion`` (``confusion_matrix`` and its ``BLOCK`` are re-exported
here); chunk matrices sum to the whole-image matrix.

Definitions, per class k, from ``confusion[t, p]`` (pixels of truth class ``t`` predicted as ``p``):

- TP = confusion[k, k], FP = column sum - TP, FN = row sum - TP.
- IoU = TP / (TP + FP + FN);  Dice (= F1) = 2 TP / (2 TP + FP + FN) = 2 IoU / (1 + IoU).
- precision = TP / (TP + FP);  recall = TP / (TP + FN);  pixel accuracy = trace / total.
- frequency-weighted IoU = sum_k (truth pixels of k / all truth pixels) * IoU_k.
- Means (``mean_iou``, ``mean_dice``, ``mean_precision``, ``mean_recall``) are macro means over the classes
  that *occur*: present in the truth or in the prediction (TP + FP + FN > 0).

Conventions, and what torchmetrics 1.9 and MONAI 1.6 do (checked in tests/unit/test_metrics_reference.py):

- Pixels whose truth equals ``ignore_index`` are left out of every count, before the matrix is built.
  torchmetrics (``ignore_index=``) agrees. If ``ignore_index`` is itself one of the classes, that class keeps
  no truth pixels, so it scores 0 wherever it is predicted; torchmetrics does the same per class, its F1,
  precision and recall keep it in the macro mean like segpipe, but its Jaccard index drops it from the macro
  mean. Use a label outside 0..K-1 (e.g. 255) as the void label to avoid the question.
- A class absent from both truth and prediction has no score: every metric is NaN (``null`` in JSON) and the
  class is left out of the means. torchmetrics (``average=None``) reports ``zero_division`` (0 or 1) for it
  instead, but its ``average="macro"`` also skips it, so segpipe's means equal torchmetrics' macro means.
  MONAI (``compute_iou`` / ``DiceMetric``, ``ignore_empty=True``, the default) also gives NaN.
- A class present in the prediction but not in the truth (an image with no truth pixels of that class)
  scores IoU = Dice = precision = 0 and recall = 0 (0/0 taken as 0 because the class occurs), and counts in
  the means: false positives on an empty image are errors. torchmetrics (``zero_division=0``, the default)
  agrees per class and in the macro mean. MONAI differs: with ``ignore_empty=True`` any class with empty
  truth is NaN and skipped (false positives go unpunished); with ``ignore_empty=False`` it is 0, as here
  (and 1 for a class absent from both).
- A class present in the truth but never predicted has precision 0 (0/0 taken as 0), like torchmetrics.
- All pixels ignored (an all-zero matrix): every per-class score and every mean is NaN, ``pixel_accuracy`` is
  NaN, ``pixels`` is 0. torchmetrics gives ``zero_division`` per class and NaN (Jaccard) or 0 (F1) as macro.
- ``frequency_weighted_iou`` equals torchmetrics' ``MulticlassJaccardIndex(average="weighted")``.
- MONAI's ``DiceMetric(reduction="mean")`` averages the classes present in the truth, so it leaves out the
  false-positive-only classes that segpipe's ``mean_dice`` counts as 0.
- Batches (``batch_aggregates``): ``micro`` scores the summed matrix (every pixel weighs the same, as
  torchmetrics accumulating over batches); ``per_image`` averages each image's scores over the images where
  they are defined (NaN skipped), so an image where a class is absent from truth and prediction does not
  count for that class, and an image whose pixels are all ignored counts for nothing. Per class this is
  MONAI's ``DiceMetric(reduction="mean_batch")`` (up to the empty-truth convention above); the per-image
  ``mean_*`` average each image's macro mean, whereas MONAI's ``reduction="mean"`` pools all defined
  (image, class) values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from segpipe.confusion import BLOCK as BLOCK
from segpipe.confusion import confusion_matrix as confusion_matrix
from segpipe.errors import InputError

PER_CLASS = ("iou", "dice", "precision", "recall")
MEANS = ("mean_iou", "mean_dice", "mean_precision", "mean_recall", "pixel_accuracy", "frequency_weighted_iou")


def defined(value: Any) -> float | None:
    """``value`` as a float; None when it is missing, not a number, or NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def finite_or_none(value: Any) -> Any:
    """Replace NaN and infinities by None, recursively, for JSON (numpy scalars become Python numbers)."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    return value


def _nan_for_none(values: Any) -> Any:
    """The inverse of ``finite_or_none`` for scores: None (an undefined score in JSON) back to NaN."""
    if values is None:
        return math.nan
    if isinstance(values, list | tuple):
        return tuple(_nan_for_none(v) for v in values)
    return float(values)


@dataclass(frozen=True)
class BandScores:
    """The scores of a part of an image (the seam band along chunk borders, or the interior)."""

    iou: tuple[float, ...]
    dice: tuple[float, ...]
    mean_iou: float
    mean_dice: float
    pixels: int

    def to_json(self) -> dict[str, Any]:
        """The JSON form, NaN as null."""
        return dict(finite_or_none({f.name: getattr(self, f.name) for f in fields(self)}))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BandScores:
        """From ``to_json``'s form, null back to NaN."""
        return cls(
            _nan_for_none(data["iou"]),
            _nan_for_none(data["dice"]),
            _nan_for_none(data["mean_iou"]),
            _nan_for_none(data["mean_dice"]),
            int(data["pixels"]),
        )


@dataclass(frozen=True)
class Scores:
    """Scores of one confusion matrix (see the module docstring).

    Per class, their macro means, pixel accuracy, frequency-weighted IoU, and the pixel counts and matrix they come
    from.
    """

    iou: tuple[float, ...]
    dice: tuple[float, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    mean_iou: float
    mean_dice: float
    mean_precision: float
    mean_recall: float
    pixel_accuracy: float
    frequency_weighted_iou: float
    pixels: int
    truth_pixels: tuple[int, ...]
    predicted_pixels: tuple[int, ...]
    confusion_matrix: tuple[tuple[int, ...], ...]

    @property
    def confusion(self) -> np.ndarray:
        """The (K, K) int64 confusion matrix."""
        return np.asarray(self.confusion_matrix, dtype=np.int64).reshape(len(self.iou), len(self.iou))

    def band(self) -> BandScores:
        """The brief form kept for a part of an image."""
        return BandScores(self.iou, self.dice, self.mean_iou, self.mean_dice, self.pixels)

    def to_json(self) -> dict[str, Any]:
        """The JSON form, NaN as null."""
        return dict(finite_or_none({f.name: getattr(self, f.name) for f in fields(self)}))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scores:
        """From ``to_json``'s form, null back to NaN."""
        floats = {name: _nan_for_none(data[name]) for name in (*PER_CLASS, *MEANS)}
        return cls(
            **floats,
            pixels=int(data["pixels"]),
            truth_pixels=tuple(int(n) for n in data["truth_pixels"]),
            predicted_pixels=tuple(int(n) for n in data["predicted_pixels"]),
            confusion_matrix=tuple(tuple(int(n) for n in row) for row in data["confusion_matrix"]),
        )


def scores(confusion: np.ndarray) -> Scores:
    """Score one confusion matrix: per-class scores, their macro means and the pixel-level scores.

    Per-class IoU, Dice, precision and recall; their macro means over the classes that occur; pixel accuracy;
    frequency-weighted IoU; truth and predicted pixels per class.
    """
    per_class = class_scores(confusion)
    counts = np.asarray(confusion, dtype=np.int64)
    total = int(counts.sum())
    values: dict[str, Any] = {name: tuple(per_class[name].tolist()) for name in PER_CLASS}
    values.update({f"mean_{name}": _nanmean(per_class[name]) for name in PER_CLASS})
    return Scores(
        **values,
        pixel_accuracy=float(np.trace(counts) / total) if total else float("nan"),
        frequency_weighted_iou=_frequency_weighted(per_class["iou"], counts.sum(axis=1)),
        pixels=total,
        truth_pixels=tuple(counts.sum(axis=1).tolist()),
        predicted_pixels=tuple(counts.sum(axis=0).tolist()),
        confusion_matrix=tuple(tuple(row) for row in counts.tolist()),
    )


def class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class ``iou``, ``dice``, ``precision``, ``recall`` as float64 arrays.

    NaN where a class is absent from truth and prediction, 0/0 taken as 0 where it occurs (see the module docstring).
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    occurs = tp + fp + fn > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "iou": np.where(occurs, tp / (tp + fp + fn), np.nan),
            "dice": np.where(occurs, 2 * tp / (2 * tp + fp + fn), np.nan),
            "precision": np.where(occurs, np.where(tp + fp > 0, tp / (tp + fp), 0.0), np.nan),
            "recall": np.where(occurs, np.where(tp + fn > 0, tp / (tp + fn), 0.0), np.nan),
        }


def _frequency_weighted(iou: np.ndarray, truth_pixels: np.ndarray) -> float:
    total = truth_pixels.sum()
    if not total:
        return float("nan")
    present = truth_pixels > 0
    return float(np.sum(iou[present] * truth_pixels[present]) / total)


def _nanmean(values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")


@dataclass(frozen=True)
class PerImageScores:
    """Each score averaged over the images where it is defined (NaN skipped).

    ``images_per_class`` counts the images that scored each class.
    """

    iou: tuple[float, ...]
    dice: tuple[float, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    images_per_class: tuple[int, ...]
    mean_iou: float
    mean_dice: float
    mean_precision: float
    mean_recall: float
    pixel_accuracy: float
    frequency_weighted_iou: float

    def to_json(self) -> dict[str, Any]:
        """The JSON form, NaN as null."""
        return dict(finite_or_none({f.name: getattr(self, f.name) for f in fields(self)}))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PerImageScores:
        """From ``to_json``'s form, null back to NaN."""
        floats = {name: _nan_for_none(data[name]) for name in (*PER_CLASS, *MEANS)}
        return cls(**floats, images_per_class=tuple(int(n) for n in data["images_per_class"]))


@dataclass(frozen=True)
class BatchAggregates:
    """``micro``: scores of the summed matrix; ``per_image``: scores averaged over the images."""

    micro: Scores
    per_image: PerImageScores
    images: int


def batch_aggregates(confusions: Sequence[np.ndarray]) -> BatchAggregates:
    """Scores of many images: the summed matrix's (``micro``) and the per-image means (``per_image``).

    ``micro``: scores of the summed matrix; ``per_image``: each score averaged over the images where it is defined (NaN
    skipped), with ``images_per_class`` counting the images that scored each class.

    Raises:
        InputError: no matrices, or matrices of different shapes.
    """
    if not confusions:
        raise InputError("no confusion matrices to aggregate")
    shapes = {np.shape(c) for c in confusions}
    if len(shapes) != 1:
        raise InputError(f"confusion matrices of different shapes: {sorted(shapes)}")
    stacked = np.stack([np.asarray(c, dtype=np.int64) for c in confusions])
    each = [scores(c) for c in stacked]
    per_class: dict[str, Any] = {
        key: tuple(_nanmean_columns(np.array([getattr(s, key) for s in each], dtype=np.float64)).tolist())
        for key in PER_CLASS
    }
    scored = ~np.isnan(np.array([s.iou for s in each], dtype=np.float64))
    means: dict[str, Any] = {
        key: _nanmean(np.array([getattr(s, key) for s in each], dtype=np.float64)) for key in MEANS
    }
    per_image = PerImageScores(**per_class, images_per_class=tuple(np.count_nonzero(scored, axis=0).tolist()), **means)
    return BatchAggregates(scores(stacked.sum(axis=0)), per_image, len(each))


def _nanmean_columns(values: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.asarray(np.nanmean(values, axis=0))


def instances_to_classes(labels: np.ndarray, mapping: dict[int, int] | None = None) -> np.ndarray:
    """Class labels from instance labels: ``mapping[id]`` for each id (0 maps to 0 unless given).

    Without a mapping every id > 0 is class 1. Returns the smallest unsigned dtype that holds the classes.

    Raises:
        InputError: a negative id, or an id > 0 missing from ``mapping``.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "uib":
        raise InputError(f"instance labels must be integers, found {labels.dtype}")
    if labels.size and labels.dtype.kind == "i" and labels.min() < 0:
        raise InputError(f"instance id {int(labels.min())} is negative")
    if mapping is None:
        return (labels > 0).astype(np.uint8)
    table = {0: 0, **{int(k): int(v) for k, v in mapping.items()}}
    if min(table.values()) < 0:
        raise InputError("class numbers in the instance mapping must be >= 0")
    ids, index = distinct_ids(labels)
    missing = [int(i) for i in ids if int(i) not in table]
    if missing:
        count = len(missing)
        raise InputError(f"instance id {missing[0]} has no class in the mapping ({count} ids lack one)")
    classes = np.array([table[int(i)] for i in ids], dtype=np.min_scalar_type(max(table.values())))
    return np.asarray(classes[index].reshape(labels.shape))


def distinct_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct ids of non-negative integer ``labels`` and each pixel's index into them, flat.

    A lookup table finds them when the ids are small, a sort otherwise.
    """
    flat = labels.ravel()
    top = int(flat.max()) if flat.size else 0
    if top >= max(1 << 24, 4 * flat.size):
        ids, inverse = np.unique(flat, return_inverse=True)
        return ids, inverse
    present = np.bincount(flat.astype(np.intp, copy=False), minlength=top + 1) > 0
    rank = (np.cumsum(present) - 1).astype(np.min_scalar_type(max(int(present.sum()) - 1, 0)))
    return np.flatnonzero(present), rank[flat]
