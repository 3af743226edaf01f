"""Confusion matrices and IoU/Dice (segpipe/metrics.py), checked against a plain numpy implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segpipe.errors import InputError
from segpipe.metrics import confusion_matrix, scores
from segpipe.tiling import chunk_grid

PROPERTY = settings(deadline=None, max_examples=80)


@st.composite
def label_pairs(draw: st.DrawFn, max_side: int = 40) -> tuple[np.ndarray, np.ndarray, int]:
    """Truth and prediction label images of one shape, with ``num_classes`` classes."""
    num_classes = draw(st.integers(2, 5))
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=max_side))
    labels = hnp.arrays(np.uint8, shape, elements=st.integers(0, num_classes - 1))
    return draw(labels), draw(labels), num_classes


def naive_scores(truth: np.ndarray, prediction: np.ndarray, num_classes: int, ignore: int | None = None):
    """Per-class IoU and Dice by the textbook definitions, one class at a time."""
    keep = np.ones(truth.shape, bool) if ignore is None else truth != ignore
    iou, dice = [], []
    for k in range(num_classes):
        t, p = (truth == k) & keep, (prediction == k) & keep
        tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
        iou.append(tp / (tp + fp + fn) if tp + fp + fn else math.nan)
        dice.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan)
    return iou, dice


@PROPERTY
@given(label_pairs(), st.integers(1, 17), st.booleans())
def test_confusion_of_chunks_sums_to_the_whole(pair, chunk: int, ignore: bool) -> None:
    truth, prediction, k = pair
    ignore_index = 0 if ignore else None
    whole = confusion_matrix(truth, prediction, k, ignore_index)
    parts = [
        confusion_matrix(truth[r.y0 : r.y1, r.x0 : r.x1], prediction[r.y0 : r.y1, r.x0 : r.x1], k, ignore_index)
        for r in chunk_grid(*truth.shape, chunk)
    ]
    np.testing.assert_array_equal(np.sum(parts, axis=0), whole)
    assert whole.dtype == np.int64
    assert whole.shape == (k, k)
    assert whole.sum() == ((truth != 0).sum() if ignore else truth.size)


@PROPERTY
@given(label_pairs())
def test_confusion_entries_count_truth_prediction_pairs(pair) -> None:
    truth, prediction, k = pair
    matrix = confusion_matrix(truth, prediction, k)
    for t in range(k):
        for p in range(k):
            assert matrix[t, p] == np.sum((truth == t) & (prediction == p))


@PROPERTY
@given(label_pairs())
def test_iou_of_a_labelling_with_itself_is_one_for_present_classes(pair) -> None:
    truth, _, k = pair
    result = scores(confusion_matrix(truth, truth, k))
    for c in range(k):
        if (truth == c).any():
            assert result.iou[c] == 1.0, f"class {c}"
            assert result.dice[c] == 1.0, f"class {c}"
        else:
            assert math.isnan(result.iou[c]), f"absent class {c}"
            assert math.isnan(result.dice[c]), f"absent class {c}"
    assert result.mean_iou == 1.0
    assert result.mean_dice == 1.0
    assert result.pixel_accuracy == 1.0


@PROPERTY
@given(label_pairs(), st.booleans())
def test_scores_match_the_textbook_definitions(pair, ignore: bool) -> None:
    truth, prediction, k = pair
    ignore_index = k - 1 if ignore else None
    result = scores(confusion_matrix(truth, prediction, k, ignore_index))
    iou, dice = naive_scores(truth, prediction, k, ignore_index)
    np.testing.assert_allclose(result.iou, iou, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(result.dice, dice, rtol=1e-12, equal_nan=True)
    for values, mean in ((iou, result.mean_iou), (dice, result.mean_dice)):
        present = [v for v in values if not math.isnan(v)]
        if present:
            assert mean == pytest.approx(float(np.mean(present)), rel=1e-12)
        else:
            assert math.isnan(mean)
    for v in result.dice + result.iou:
        assert math.isnan(v) or 0.0 <= v <= 1.0
    # Dice = 2 IoU / (1 + IoU) for every class
    for i, d in zip(result.iou, result.dice, strict=True):
        assert math.isnan(i) == math.isnan(d)
        if not math.isnan(i):
            assert d == pytest.approx(2 * i / (1 + i), abs=1e-12)


def test_class_absent_from_truth_and_prediction_is_nan_and_left_out_of_means() -> None:
    truth = np.array([[0, 0, 1], [1, 1, 0]])
    prediction = np.array([[0, 1, 1], [1, 1, 0]])
    result = scores(confusion_matrix(truth, prediction, 3))
    assert math.isnan(result.iou[2])
    assert math.isnan(result.dice[2])
    assert result.iou[:2] == (2 / 3, 3 / 4)
    assert result.mean_iou == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert result.mean_dice == pytest.approx((4 / 5 + 6 / 7) / 2)
    assert result.pixels == 6
    assert result.pixel_accuracy == pytest.approx(5 / 6)
    assert result.confusion_matrix == ((2, 1, 0), (0, 3, 0), (0, 0, 0))


def test_empty_confusion_has_nan_scores() -> None:
    result = scores(np.zeros((2, 2), np.int64))
    assert all(math.isnan(v) for v in result.iou + result.dice)
    assert math.isnan(result.mean_iou)
    assert math.isnan(result.pixel_accuracy)
    assert result.pixels == 0


def test_ignore_index_pixels_are_left_out_of_every_count() -> None:
    truth = np.array([[255, 0, 1, 255]], np.uint8)
    prediction = np.array([[1, 0, 1, 0]], np.uint8)
    matrix = confusion_matrix(truth, prediction, 2, ignore_index=255)
    np.testing.assert_array_equal(matrix, [[1, 0], [0, 1]])
    assert scores(matrix).pixels == 2
    # A truth that is all ignore counts nothing and raises nothing.
    assert confusion_matrix(np.full((3, 3), 255), np.ones((3, 3)), 2, 255).sum() == 0


@pytest.mark.parametrize("bad", [2, 7, -1])
def test_truth_label_outside_the_classes_raises_input_error(bad: int) -> None:
    truth = np.array([[0, 1], [bad, 0]])
    with pytest.raises(InputError, match=str(bad)):
        confusion_matrix(truth, np.zeros((2, 2), np.int64), 2)


def test_prediction_label_outside_the_classes_raises_input_error() -> None:
    with pytest.raises(InputError):
        confusion_matrix(np.zeros((2, 2), np.uint8), np.array([[0, 3], [0, 0]], np.uint8), 2)
