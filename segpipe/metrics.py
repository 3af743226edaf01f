"""Segmentation metrics from confusion matrices. Pure numpy; chunk matrices sum to the whole-image matrix.

Conventions:
- ``confusion[t, p]`` counts pixels of truth class ``t`` predicted as ``p``.
- Pixels whose truth equals ``ignore_index`` are left out of every count.
- IoU_k = TP / (TP + FP + FN);  Dice_k = 2 TP / (2 TP + FP + FN).
- A class absent from both truth and prediction (TP + FP + FN = 0) has no defined score: it is NaN (``null``
  in JSON) and left out of the means, which average the classes that occur.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segpipe.errors import InputError


def confusion_matrix(
    truth: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """(K, K) int64 confusion matrix of two equally shaped label arrays."""
    truth = truth.reshape(-1).astype(np.int64, copy=False)
    prediction = prediction.reshape(-1).astype(np.int64, copy=False)
    if ignore_index is not None:
        keep = truth != ignore_index
        truth, prediction = truth[keep], prediction[keep]
    if truth.size and (truth.min() < 0 or truth.max() >= num_classes):
        bad = int(truth.max() if truth.max() >= num_classes else truth.min())
        raise InputError(f"truth label {bad} is outside the model's classes 0..{num_classes - 1}")
    if prediction.size and (prediction.min() < 0 or prediction.max() >= num_classes):
        raise InputError(f"prediction label outside 0..{num_classes - 1}")
    counts = np.bincount(truth * num_classes + prediction, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def scores(confusion: np.ndarray) -> dict[str, Any]:
    """Per-class IoU and Dice, their means over classes that occur, and pixel accuracy."""
    confusion = confusion.astype(np.float64)
    tp = np.diag(confusion)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        dice = np.where(union > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    total = confusion.sum()
    return {
        "iou": iou.tolist(),
        "dice": dice.tolist(),
        "mean_iou": _nanmean(iou),
        "mean_dice": _nanmean(dice),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "pixels": int(total),
        "confusion_matrix": confusion.astype(np.int64).tolist(),
    }


def _nanmean(values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    return float(present.mean()) if present.size else float("nan")
