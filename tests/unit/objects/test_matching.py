"""Object metrics (segpipe/objects/matching.py): hand-made masks with known matches, and stardist's matching algorithm
(dense overlap, optimal assignment by scipy's linear_sum_assignment with stardist's cost) as a reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from segpipe.errors import ConfigError, InputError
from segpipe.objects import (
    THRESHOLDS,
    label_objects,
    match_objects,
    object_metrics,
    object_overlap,
    score_objects,
    sum_object_metrics,
)

PROPERTY = settings(deadline=None, max_examples=80)


def square(
    shape: tuple[int, int], y: int, x: int, h: int, w: int, value: int = 1, into: np.ndarray | None = None
) -> np.ndarray:
    out = np.zeros(shape, np.int32) if into is None else into
    out[y : y + h, x : x + w] = value
    return out


def by_threshold(results: list[dict]) -> dict[float, dict]:
    return {row["threshold"]: row for row in results}


def stardist_matching(y_true: np.ndarray, y_pred: np.ndarray, thresh: float) -> tuple[int, int, int, float]:
    """tp, fp, fn and summed matched IoU as stardist 0.9.2 ``matching`` computes them (IoU kept in float64
    here; stardist rounds it to float32, which only matters for an IoU within 1e-7 of a threshold)."""
    _, t = np.unique(y_true, return_inverse=True)
    _, p = np.unique(y_pred, return_inverse=True)
    t, p = t.ravel() + (0 if (y_true == 0).any() else 1), p.ravel() + (0 if (y_pred == 0).any() else 1)
    overlap = np.zeros((t.max() + 1, p.max() + 1), np.int64)
    np.add.at(overlap, (t, p), 1)
    union = overlap.sum(0, keepdims=True) + overlap.sum(1, keepdims=True) - overlap
    scores = np.divide(overlap, union, out=np.zeros(overlap.shape), where=union > 0)[1:, 1:]
    n_true, n_pred = scores.shape
    n_matched = min(n_true, n_pred)
    if n_matched == 0:
        return 0, n_pred, n_true, 0.0
    costs = -(scores >= thresh).astype(float) - scores / (2 * n_matched)
    rows, cols = linear_sum_assignment(costs)
    ok = scores[rows, cols] >= thresh
    tp = int(ok.sum())
    return tp, n_pred - tp, n_true - tp, float(scores[rows, cols][ok].sum())


@st.composite
def instance_pair(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Truth and prediction instance images from overlapping random rectangles (later ones paint over
    earlier ones), ids arbitrary and not sequential."""
    side = draw(st.integers(4, 28))
    images = []
    for _ in range(2):
        image = np.zeros((side, side), np.int64)
        for _ in range(draw(st.integers(0, 8))):
            y, x = draw(st.integers(0, side - 1)), draw(st.integers(0, side - 1))
            h, w = draw(st.integers(1, side)), draw(st.integers(1, side))
            image[y : y + h, x : x + w] = draw(st.integers(1, 10_000))
        images.append(image)
    # the prediction often a slightly shifted copy of the truth, so matches near every threshold occur
    if draw(st.booleans()):
        images[1] = np.roll(images[0], draw(st.integers(-2, 2)), axis=draw(st.integers(0, 1)))
    return images[0], images[1]


@PROPERTY
@given(instance_pair())
def test_counts_and_matched_iou_equal_stardist_matching(pair) -> None:
    truth, prediction = pair
    for row in object_metrics(truth, prediction):
        tp, fp, fn, matched = stardist_matching(truth, prediction, row["threshold"])
        assert (row["tp"], row["fp"], row["fn"]) == (tp, fp, fn)
        assert row["sum_matched_iou"] == pytest.approx(matched, abs=1e-9)
        if tp:  # where stardist's ratios are defined they agree
            assert row["precision"] == pytest.approx(tp / (tp + fp))
            assert row["recall"] == pytest.approx(tp / (tp + fn))
            assert row["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
            assert row["mean_matched_iou"] == pytest.approx(matched / tp)
            assert row["panoptic_quality"] == pytest.approx(matched / (tp + fp / 2 + fn / 2))


@PROPERTY
@given(instance_pair())
def test_matches_are_one_to_one_and_shrink_with_the_threshold(pair) -> None:
    truth, prediction = pair
    overlap = object_overlap(truth, prediction)
    previous = math.inf
    for threshold in THRESHOLDS:
        t, p, iou = match_objects(overlap, threshold)
        assert len(set(t.tolist())) == t.size
        assert len(set(p.tolist())) == p.size
        assert (iou >= threshold).all(), f"a match below IoU {threshold}: {iou}"
        assert t.size <= previous
        previous = t.size
    results = object_metrics(truth, prediction)
    assert [r["tp"] for r in results] == sorted((r["tp"] for r in results), reverse=True)
    assert all(r["tp"] + r["fp"] == r["n_pred"] and r["tp"] + r["fn"] == r["n_true"] for r in results)


def test_shifted_square_matches_up_to_its_iou() -> None:
    """A 10x10 square shifted by 2 columns has IoU 80 / 120 = 2/3; a second square is exact; one prediction
    overlaps nothing."""
    truth = square((40, 40), 2, 2, 10, 10, 5)
    square((40, 40), 20, 20, 10, 10, 9, into=truth)
    prediction = square((40, 40), 2, 4, 10, 10, 1)
    square((40, 40), 20, 20, 10, 10, 2, into=prediction)
    square((40, 40), 34, 0, 3, 3, 3, into=prediction)
    results = by_threshold(object_metrics(truth, prediction))
    for threshold in (0.5, 0.55, 0.6, 0.65):
        row = results[threshold]
        assert (row["tp"], row["fp"], row["fn"]) == (2, 1, 0)
        assert row["mean_matched_iou"] == pytest.approx((1 + 2 / 3) / 2)
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((2 / 3, 1.0, 0.8))
    for threshold in (0.7, 0.75, 0.8, 0.85, 0.9):
        row = results[threshold]
        assert (row["tp"], row["fp"], row["fn"], row["mean_matched_iou"]) == (1, 2, 1, 1.0)
    overlap = object_overlap(truth, prediction)
    pairs = {
        (int(t), int(p)): float(v) for t, p, v in zip(overlap.true_ids, overlap.pred_ids, overlap.iou, strict=True)
    }
    assert pairs == {(1, 1): pytest.approx(2 / 3), (2, 2): 1.0}  # ids renumbered 1..n in id order


def test_split_and_merge_tie_at_one_half() -> None:
    """A true object predicted as two halves (IoU 0.5 each), and two true halves predicted as one object:
    one match each at 0.5, none above."""
    split_truth = square((12, 12), 0, 0, 10, 10, 1)
    split_prediction = square((12, 12), 0, 0, 10, 5, 1)
    square((12, 12), 0, 5, 10, 5, 2, into=split_prediction)
    merge_truth, merge_prediction = split_prediction, split_truth
    for truth, prediction, expected in (
        (split_truth, split_prediction, (1, 1, 0)),
        (merge_truth, merge_prediction, (1, 0, 1)),
    ):
        results = by_threshold(object_metrics(truth, prediction))
        assert (results[0.5]["tp"], results[0.5]["fp"], results[0.5]["fn"]) == expected
        assert results[0.5]["mean_matched_iou"] == 0.5
        for threshold in THRESHOLDS[1:]:
            assert results[threshold]["tp"] == 0
            assert math.isnan(results[threshold]["mean_matched_iou"])


def test_perfect_prediction_scores_one_at_every_threshold() -> None:
    rng = np.random.default_rng(11)
    truth = np.zeros((64, 64), np.int32)
    for i in range(1, 15):
        y, x = rng.integers(0, 56, 2)
        truth[y : y + rng.integers(2, 8), x : x + rng.integers(2, 8)] = i * 1000
    prediction = truth.copy()
    for row in object_metrics(truth, prediction):
        assert row["f1"] == row["precision"] == row["recall"] == row["mean_matched_iou"] == 1.0
        assert row["fp"] == row["fn"] == 0
        assert row["tp"] == len(np.unique(truth)) - 1


def test_empty_images_give_nan_where_stardist_gives_zero() -> None:
    empty = np.zeros((8, 8), np.uint8)
    one = square((8, 8), 1, 1, 3, 3)
    nothing = object_metrics(empty, empty)[0]
    assert (nothing["tp"], nothing["fp"], nothing["fn"]) == (0, 0, 0)
    for key in ("precision", "recall", "f1", "mean_matched_iou", "panoptic_quality"):
        assert math.isnan(nothing[key])
    missed = object_metrics(one, empty)[0]
    assert (missed["fn"], missed["recall"], missed["f1"]) == (1, 0.0, 0.0)
    assert math.isnan(missed["precision"])
    spurious = object_metrics(empty, one)[0]
    assert (spurious["fp"], spurious["precision"], spurious["f1"]) == (1, 0.0, 0.0)
    assert math.isnan(spurious["recall"])


def test_label_objects_connectivity_and_foreground() -> None:
    mask = np.array([[1, 0, 0, 2], [0, 1, 0, 2], [0, 0, 0, 0], [2, 2, 0, 1]], np.uint8)
    assert label_objects(mask, connectivity=4)[1] == 5
    assert label_objects(mask, connectivity=8)[1] == 4
    labels, count = label_objects(mask, connectivity=8, foreground=2)
    assert count == 2
    assert labels.dtype == np.int32
    assert set(np.unique(labels[mask == 2])) == {1, 2}
    assert (labels[mask != 2] == 0).all(), "pixels outside the foreground class were labelled"
    with pytest.raises(ConfigError):
        label_objects(mask, connectivity=6)


def test_score_objects_labels_a_semantic_prediction() -> None:
    """Two touching true nuclei predicted as one class-1 blob: the blob matches one of them at IoU 0.5."""
    truth = square((10, 20), 2, 2, 4, 4, 7)
    square((10, 20), 2, 6, 4, 4, 8, into=truth)
    prediction = (truth > 0).astype(np.uint8)
    row = score_objects(truth, prediction)[0]
    assert (row["tp"], row["fp"], row["fn"], row["n_pred"]) == (1, 0, 1, 1)
    prediction[2:6, 6] = 0  # a one-pixel gap separates the two
    row = score_objects(truth, prediction)[0]
    assert (row["tp"], row["fp"], row["fn"]) == (2, 0, 0)
    assert row["mean_matched_iou"] == pytest.approx((1 + 0.75) / 2)


def test_sum_object_metrics_equals_metrics_of_images_side_by_side() -> None:
    rng = np.random.default_rng(2)
    pairs = []
    for _ in range(3):
        truth = np.zeros((30, 30), np.int32)
        for i in range(1, 6):
            y, x = rng.integers(0, 24, 2)
            truth[y : y + 6, x : x + 6] = i
        pairs.append((truth, np.roll(truth, int(rng.integers(0, 3)), axis=1)))
    gap = np.zeros((30, 2), np.int32)  # objects of neighbouring images never touch
    padded = [(np.hstack([t, gap]), np.hstack([p, gap])) for t, p in pairs]
    wide_truth = np.hstack([np.where(t > 0, t + 100 * i, 0) for i, (t, _) in enumerate(padded)])
    wide_prediction = np.hstack([np.where(p > 0, p + 100 * i, 0) for i, (_, p) in enumerate(padded)])
    summed = sum_object_metrics([object_metrics(t, p) for t, p in padded])
    whole = object_metrics(wide_truth, wide_prediction)
    for mine, theirs in zip(summed, whole, strict=True):
        assert mine == pytest.approx(theirs, nan_ok=True)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="0.5"):
        object_metrics(np.ones((3, 3), np.int32), np.ones((3, 3), np.int32), thresholds=[0.3])
    with pytest.raises(InputError):
        object_overlap(np.ones((3, 3), np.int32), np.ones((3, 4), np.int32))
    with pytest.raises(InputError, match="negative"):
        object_overlap(np.array([[0, -2]]), np.array([[0, 1]]))
    with pytest.raises(InputError):
        sum_object_metrics([])


def test_large_ids_are_renumbered() -> None:
    truth = np.array([[0, 2**40, 2**40], [0, 0, 3]], np.int64)
    prediction = np.array([[0, 9, 9], [0, 0, 0]], np.uint64)
    row = object_metrics(truth, prediction)[0]
    assert (row["tp"], row["fp"], row["fn"], row["n_true"]) == (1, 0, 1, 2)
