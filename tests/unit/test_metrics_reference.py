"""segpipe.metrics against torchmetrics and MONAI, on the classes where conventions agree; the documented
differences (module docstring of segpipe/metrics.py) asserted where they do not. Plus invariants, batch
aggregates, instance-to-class mapping and every dtype path of ``confusion_matrix``."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segpipe.errors import InputError
from segpipe.metrics import BLOCK, batch_aggregates, confusion_matrix, instances_to_classes, scores
from segpipe.tiling import chunk_grid

torch = pytest.importorskip("torch")
tmc = pytest.importorskip("torchmetrics.classification", reason="reference: pip install torchmetrics")
monai_metrics = pytest.importorskip("monai.metrics", reason="reference: pip install monai")

PROPERTY = settings(deadline=None, max_examples=60)
VOID = 255
TOL = 1e-6


@st.composite
def labelled(draw: st.DrawFn, max_side: int = 24) -> tuple[np.ndarray, np.ndarray, int, int | None]:
    """Truth and prediction of K in 2..6 classes; truth sometimes carries void pixels (255)."""
    k = draw(st.integers(2, 6))
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=max_side))
    # few classes per image now and then, so classes absent from truth and/or prediction are common
    used = draw(st.integers(1, k))
    truth = draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, used - 1)))
    prediction = draw(hnp.arrays(np.uint8, shape, elements=st.integers(0, k - 1)))
    ignore = draw(st.sampled_from([None, VOID]))
    if ignore is not None:
        truth = np.where(draw(hnp.arrays(bool, shape)), np.uint8(VOID), truth)
    return truth, prediction, k, ignore


def torchmetrics_scores(
    truth: np.ndarray,
    prediction: np.ndarray,
    k: int,
    ignore: int | None,
    average: str | None = None,
    zero_division: float = 0,
) -> dict[str, np.ndarray]:
    """torchmetrics' Jaccard, F1, precision, recall (and accuracy for ``micro``) on flat int64 tensors."""
    t = torch.from_numpy(truth.ravel().astype(np.int64))
    p = torch.from_numpy(prediction.ravel().astype(np.int64))
    options = {"num_classes": k, "average": average, "ignore_index": ignore, "zero_division": zero_division}
    metric_classes = {
        "iou": tmc.MulticlassJaccardIndex,
        "dice": tmc.MulticlassF1Score,
        "precision": tmc.MulticlassPrecision,
        "recall": tmc.MulticlassRecall,
    }
    return {name: cls(**options)(p, t).double().numpy() for name, cls in metric_classes.items()}


def monai_scores(
    truth: np.ndarray, prediction: np.ndarray, k: int, ignore: int | None, ignore_empty: bool = True
) -> dict[str, np.ndarray]:
    """MONAI compute_iou and DiceMetric on one-hot (1, K, N) tensors of the kept pixels."""
    keep = truth != ignore if ignore is not None else np.ones(truth.shape, bool)
    t, p = truth[keep].astype(np.int64), prediction[keep].astype(np.int64)
    eye = np.eye(k, dtype=np.float64)
    onehot_t = torch.from_numpy(eye[t].T[None].copy())
    onehot_p = torch.from_numpy(eye[p].T[None].copy())
    iou = monai_metrics.compute_iou(onehot_p, onehot_t, include_background=True, ignore_empty=ignore_empty)
    dice = monai_metrics.DiceMetric(reduction="none", ignore_empty=ignore_empty)(onehot_p, onehot_t)
    return {"iou": iou[0].double().numpy(), "dice": dice[0].double().numpy()}


def occurrence(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class: occurs (truth or prediction), in truth, in prediction."""
    in_truth, in_prediction = confusion.sum(axis=1) > 0, confusion.sum(axis=0) > 0
    return in_truth | in_prediction, in_truth, in_prediction


# --------------------------------------------------------------------------------------- torchmetrics


@PROPERTY
@given(labelled())
def test_per_class_scores_match_torchmetrics_where_the_class_occurs(case) -> None:
    truth, prediction, k, ignore = case
    confusion = confusion_matrix(truth, prediction, k, ignore)
    ours = scores(confusion)
    occurs, _, _ = occurrence(confusion)
    for zero_division in (0, 1):
        theirs = torchmetrics_scores(truth, prediction, k, ignore, None, zero_division)
        for name in ("iou", "dice", "precision", "recall"):
            mine = np.array(getattr(ours, name))
            if zero_division == 0:  # 0/0 inside an occurring class is 0 for both
                np.testing.assert_allclose(mine[occurs], theirs[name][occurs], atol=TOL)
            # documented difference: a class absent from both is NaN here, zero_division there
            assert np.isnan(mine[~occurs]).all()
            np.testing.assert_array_equal(theirs[name][~occurs], zero_division)


@PROPERTY
@given(labelled())
def test_means_match_torchmetrics_macro_and_weighted(case) -> None:
    truth, prediction, k, ignore = case
    ours = scores(confusion_matrix(truth, prediction, k, ignore))
    macro = torchmetrics_scores(truth, prediction, k, ignore, "macro")
    if ours.pixels == 0:
        return  # all ignored: covered by test_all_pixels_ignored
    for name in ("iou", "dice", "precision", "recall"):
        assert getattr(ours, f"mean_{name}") == pytest.approx(float(macro[name]), abs=TOL)
    weighted = torchmetrics_scores(truth, prediction, k, ignore, "weighted")
    assert ours.frequency_weighted_iou == pytest.approx(float(weighted["iou"]), abs=TOL)
    t, p = torch.from_numpy(truth.astype(np.int64)), torch.from_numpy(prediction.astype(np.int64))
    accuracy = tmc.MulticlassAccuracy(num_classes=k, average="micro", ignore_index=ignore)(p, t)
    assert ours.pixel_accuracy == pytest.approx(float(accuracy), abs=TOL)


def test_binary_matches_torchmetrics_binary_metrics() -> None:
    rng = np.random.default_rng(7)
    truth, prediction = rng.integers(0, 2, (64, 64)), rng.integers(0, 2, (64, 64))
    ours = scores(confusion_matrix(truth, prediction, 2))
    t, p = torch.from_numpy(truth), torch.from_numpy(prediction)
    assert ours.iou[1] == pytest.approx(float(tmc.BinaryJaccardIndex()(p, t)), abs=TOL)
    assert ours.dice[1] == pytest.approx(float(tmc.BinaryF1Score()(p, t)), abs=TOL)
    assert ours.precision[1] == pytest.approx(float(tmc.BinaryPrecision()(p, t)), abs=TOL)
    assert ours.recall[1] == pytest.approx(float(tmc.BinaryRecall()(p, t)), abs=TOL)


def test_one_class_only() -> None:
    truth = prediction = np.zeros((5, 7), np.uint8)
    ours = scores(confusion_matrix(truth, prediction, 3))
    assert ours.iou[0] == 1.0
    assert all(math.isnan(v) for v in ours.iou[1:] + ours.recall[1:])
    for key in ("mean_iou", "mean_dice", "pixel_accuracy", "frequency_weighted_iou"):
        assert getattr(ours, key) == 1.0
    per_class = torchmetrics_scores(truth, prediction, 3, None)
    np.testing.assert_array_equal(per_class["iou"], [1.0, 0.0, 0.0])  # zero_division for absent classes
    assert float(torchmetrics_scores(truth, prediction, 3, None, "macro")["iou"]) == 1.0  # absent: skipped
    monai = monai_scores(truth, prediction, 3, None)
    assert monai["iou"][0] == 1.0
    assert np.isnan(monai["iou"][1:]).all()


def test_class_absent_from_truth_but_predicted() -> None:
    """Class 2 is predicted on 2 pixels but has no truth: 0 here and in torchmetrics, NaN in MONAI."""
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1]], np.uint8)
    prediction = np.array([[0, 2, 1, 1], [0, 0, 2, 1]], np.uint8)
    ours = scores(confusion_matrix(truth, prediction, 3))
    assert ours.iou == (0.75, 0.75, 0.0)
    assert ours.dice == pytest.approx((6 / 7, 6 / 7, 0.0))
    assert ours.precision == (1.0, 1.0, 0.0)
    assert ours.recall == (0.75, 0.75, 0.0)
    assert ours.mean_iou == pytest.approx(0.5)
    theirs = torchmetrics_scores(truth, prediction, 3, None)
    np.testing.assert_allclose(theirs["iou"], [0.75, 0.75, 0.0], atol=TOL)
    np.testing.assert_allclose(theirs["recall"], [0.75, 0.75, 0.0], atol=TOL)
    assert float(torchmetrics_scores(truth, prediction, 3, None, "macro")["iou"]) == pytest.approx(0.5)
    monai = monai_scores(truth, prediction, 3, None, ignore_empty=True)
    np.testing.assert_allclose(monai["iou"][:2], [0.75, 0.75])
    assert np.isnan(monai["iou"][2])
    assert np.isnan(monai["dice"][2])
    lenient = monai_scores(truth, prediction, 3, None, ignore_empty=False)
    np.testing.assert_allclose(lenient["iou"], [0.75, 0.75, 0.0])


def test_all_pixels_ignored() -> None:
    truth, prediction = np.full((4, 4), VOID, np.uint8), np.ones((4, 4), np.uint8)
    ours = scores(confusion_matrix(truth, prediction, 3, VOID))
    assert ours.pixels == 0
    assert ours.truth_pixels == (0, 0, 0)
    for key in ("iou", "dice", "precision", "recall"):
        assert all(math.isnan(v) for v in getattr(ours, key))
        assert math.isnan(getattr(ours, f"mean_{key}"))
    assert math.isnan(ours.pixel_accuracy)
    assert math.isnan(ours.frequency_weighted_iou)
    # torchmetrics: zero_division per class; macro Jaccard NaN but macro F1 0
    np.testing.assert_array_equal(torchmetrics_scores(truth, prediction, 3, VOID)["iou"], [0, 0, 0])
    macro = torchmetrics_scores(truth, prediction, 3, VOID, "macro")
    assert math.isnan(float(macro["iou"]))
    assert float(macro["dice"]) == 0.0


def test_ignore_index_inside_the_classes() -> None:
    """Per class segpipe and torchmetrics agree; torchmetrics' macro Jaccard drops the ignored class, its
    macro F1 keeps it, as segpipe does for both."""
    truth = np.array([0, 0, 1, 1, 2, 2, 1], np.uint8)
    prediction = np.array([0, 2, 1, 1, 0, 1, 0], np.uint8)
    ours = scores(confusion_matrix(truth, prediction, 3, ignore_index=2))
    theirs = torchmetrics_scores(truth, prediction, 3, 2)
    for name in ("iou", "dice", "precision", "recall"):
        np.testing.assert_allclose(getattr(ours, name), theirs[name], atol=TOL)
    macro = torchmetrics_scores(truth, prediction, 3, 2, "macro")
    assert ours.mean_dice == pytest.approx(float(macro["dice"]), abs=TOL) == (0.5 + 0.8 + 0.0) / 3
    assert ours.mean_iou == pytest.approx((1 / 3 + 2 / 3 + 0.0) / 3)
    assert float(macro["iou"]) == pytest.approx((1 / 3 + 2 / 3) / 2, abs=TOL)


# --------------------------------------------------------------------------------------- MONAI


@PROPERTY
@given(labelled())
def test_iou_and_dice_match_monai_where_truth_has_the_class(case) -> None:
    truth, prediction, k, ignore = case
    confusion = confusion_matrix(truth, prediction, k, ignore)
    ours = scores(confusion)
    occurs, in_truth, in_prediction = occurrence(confusion)
    strict = monai_scores(truth, prediction, k, ignore, ignore_empty=True)
    lenient = monai_scores(truth, prediction, k, ignore, ignore_empty=False)
    for name in ("iou", "dice"):
        mine = np.array(getattr(ours, name))
        np.testing.assert_allclose(mine[in_truth], strict[name][in_truth], atol=TOL)
        assert np.isnan(strict[name][~in_truth]).all()  # ignore_empty=True: empty truth is NaN
        false_positive_only = ~in_truth & in_prediction
        np.testing.assert_allclose(lenient[name][false_positive_only], 0.0)
        np.testing.assert_array_equal(mine[false_positive_only], 0.0)
        np.testing.assert_array_equal(lenient[name][~occurs], 1.0)  # ignore_empty=False: absent from both
        assert np.isnan(mine[~occurs]).all()


def test_monai_mean_dice_skips_false_positive_only_classes() -> None:
    truth = np.array([[0, 0, 1, 1]], np.uint8)
    prediction = np.array([[0, 2, 1, 1]], np.uint8)
    eye = np.eye(3)
    metric = monai_metrics.DiceMetric(include_background=True, reduction="mean")
    metric(
        torch.from_numpy(eye[prediction].transpose(0, 2, 1).copy()),
        torch.from_numpy(eye[truth].transpose(0, 2, 1).copy()),
    )
    ours = scores(confusion_matrix(truth, prediction, 3))
    assert float(metric.aggregate()) == pytest.approx((ours.dice[0] + ours.dice[1]) / 2)
    assert ours.mean_dice == pytest.approx((ours.dice[0] + ours.dice[1] + 0.0) / 3)


# --------------------------------------------------------------------------------------- invariants


@PROPERTY
@given(labelled(max_side=30), st.integers(1, 11))
def test_scores_of_summed_chunk_matrices_equal_scores_of_the_whole(case, chunk: int) -> None:
    truth, prediction, k, ignore = case
    whole = scores(confusion_matrix(truth, prediction, k, ignore))
    parts = [
        confusion_matrix(truth[r.y0 : r.y1, r.x0 : r.x1], prediction[r.y0 : r.y1, r.x0 : r.x1], k, ignore)
        for r in chunk_grid(truth.shape[0], truth.shape[1], chunk)
    ]
    summed = scores(np.sum(parts, axis=0))
    for field in dataclasses.fields(whole):
        np.testing.assert_array_equal(getattr(summed, field.name), getattr(whole, field.name))  # NaN equals NaN here


@PROPERTY
@given(labelled())
def test_score_invariants(case) -> None:
    truth, prediction, k, ignore = case
    ours = scores(confusion_matrix(truth, prediction, k, ignore))
    for i, d, p, r in zip(ours.iou, ours.dice, ours.precision, ours.recall, strict=True):
        assert all(math.isnan(v) for v in (i, d, p, r)) or all(0.0 <= v <= 1.0 for v in (i, d, p, r))
        if not math.isnan(i):
            assert d == pytest.approx(2 * i / (1 + i), abs=1e-12)
            assert d == pytest.approx(2 * p * r / (p + r) if p + r else 0.0, abs=1e-12)
    same = scores(confusion_matrix(truth, np.where(truth == VOID, 0, truth), k, ignore))
    present = np.array(same.truth_pixels) > 0
    assert all(np.array(same.iou)[present] == 1.0)
    assert all(np.isnan(np.array(same.iou)[~present]))


# --------------------------------------------------------------------------------------- batches


def test_batch_aggregates_micro_and_per_image() -> None:
    good = np.array([[6, 0], [0, 2]])  # iou [1, 1]
    poor = np.array([[2, 2], [2, 2]])  # iou [1/3, 1/3]
    empty_class = np.array([[4, 0], [0, 0]])  # class 1 absent from both: iou [1, nan]
    result = batch_aggregates([good, poor, empty_class])
    assert result.images == 3
    assert result.micro == scores(good + poor + empty_class)
    per_image = result.per_image
    assert per_image.iou == pytest.approx(((1 + 1 / 3 + 1) / 3, (1 + 1 / 3) / 2))
    assert per_image.images_per_class == (3, 2)
    assert per_image.mean_iou == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert per_image.pixel_accuracy == pytest.approx((1 + 0.5 + 1) / 3)


def test_per_image_dice_equals_monai_mean_batch() -> None:
    """Images where every class that occurs is in the truth (MONAI's empty-truth convention then agrees)."""
    rng = np.random.default_rng(9)
    pairs = []
    for used in (2, 3, 2, 1):
        truth = rng.integers(0, used, (1, 40)).astype(np.uint8)
        noisy = np.where(rng.random(truth.shape) < 0.3, rng.integers(0, used, truth.shape), truth)
        pairs.append((truth, noisy.astype(np.uint8)))
    ours = batch_aggregates([confusion_matrix(t, p, 3) for t, p in pairs]).per_image
    eye = np.eye(3)
    truths = torch.from_numpy(np.stack([eye[t[0]].T for t, _ in pairs]))
    predictions = torch.from_numpy(np.stack([eye[p[0]].T for _, p in pairs]))
    metric = monai_metrics.DiceMetric(reduction="mean_batch")
    metric(predictions, truths)
    np.testing.assert_allclose(ours.dice, metric.aggregate().double().numpy(), atol=TOL)
    assert ours.images_per_class == (4, 3, 1)


def test_batch_aggregates_skip_images_with_every_pixel_ignored() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = batch_aggregates([np.zeros((2, 2), np.int64), np.array([[1, 1], [0, 2]])])
    assert result.per_image.iou == pytest.approx((0.5, 2 / 3))
    assert result.per_image.images_per_class == (1, 1)
    assert math.isnan(batch_aggregates([np.zeros((2, 2))]).per_image.mean_dice)


@pytest.mark.parametrize("bad", [[], [np.zeros((2, 2)), np.zeros((3, 3))]])
def test_batch_aggregates_reject_bad_input(bad) -> None:
    with pytest.raises(InputError):
        batch_aggregates(bad)


# --------------------------------------------------------------------------------------- instances


def test_instances_to_classes() -> None:
    labels = np.array([[0, 3, 3], [7, 0, 12]], np.uint16)
    np.testing.assert_array_equal(instances_to_classes(labels), [[0, 1, 1], [1, 0, 1]])
    mapped = instances_to_classes(labels, {3: 2, 7: 1, 12: 2})
    np.testing.assert_array_equal(mapped, [[0, 2, 2], [1, 0, 2]])
    assert mapped.dtype == np.uint8
    huge = np.array([[0, 2**40], [5, 2**40]], np.int64)  # sparse ids take the sorting path
    np.testing.assert_array_equal(instances_to_classes(huge, {2**40: 3, 5: 1}), [[0, 3], [1, 3]])
    with pytest.raises(InputError, match="instance id 12"):
        instances_to_classes(labels, {3: 2, 7: 1})
    with pytest.raises(InputError, match="negative"):
        instances_to_classes(np.array([[0, -4]]))


# --------------------------------------------------------------------------------------- dtypes


def naive_confusion(truth: np.ndarray, prediction: np.ndarray, k: int, ignore: int | None) -> np.ndarray:
    t, p = truth.ravel().astype(np.int64), prediction.ravel().astype(np.int64)
    keep = t != ignore if ignore is not None else np.ones(t.shape, bool)
    return np.array([[np.sum((t[keep] == a) & (p[keep] == b)) for b in range(k)] for a in range(k)])


LABEL_DTYPES = [bool, np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32, np.int64]


@pytest.mark.parametrize("dtype", LABEL_DTYPES)
@pytest.mark.parametrize("ignore", [None, 0, 100])
def test_confusion_matrix_is_exact_for_every_label_dtype(dtype, ignore) -> None:
    rng = np.random.default_rng(3)
    k = 2 if dtype is bool else 4
    truth = rng.integers(0, k, (97, 203)).astype(dtype)
    prediction = rng.integers(0, k, (97, 203)).astype(dtype)
    if ignore == 100 and dtype is not bool:
        truth[::5, ::3] = ignore
    expected = naive_confusion(truth, prediction, k, ignore)
    np.testing.assert_array_equal(confusion_matrix(truth, prediction, k, ignore), expected)
    np.testing.assert_array_equal(
        confusion_matrix(truth[:, 3:150], prediction[:, 3:150], k, ignore),
        naive_confusion(truth[:, 3:150], prediction[:, 3:150], k, ignore),
    )


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int64])
def test_negative_truth_is_reported_unless_ignored(dtype) -> None:
    truth = np.array([[0, -1], [1, 0]], dtype)
    with pytest.raises(InputError, match="-1"):
        confusion_matrix(truth, np.zeros((2, 2), np.uint8), 2)
    ignored = confusion_matrix(truth, np.zeros((2, 2), np.uint8), 2, ignore_index=-1)
    np.testing.assert_array_equal(ignored, [[2, 0], [1, 0]])


@pytest.mark.parametrize("k", [3, 17])  # codes in uint8 (pairs counted as uint16) and in uint16
@pytest.mark.parametrize("ignore", [None, VOID])
def test_confusion_matrix_spans_many_blocks(k: int, ignore: int | None) -> None:
    rng = np.random.default_rng(k)
    size = 2 * BLOCK + 3  # odd: one code left over after pairing
    truth, prediction = rng.integers(0, k, (2, size), dtype=np.uint8)
    if ignore is not None:
        truth[::7] = ignore
    np.testing.assert_array_equal(
        confusion_matrix(truth, prediction, k, ignore), naive_confusion_fast(truth, prediction, k, ignore)
    )
    truth[-1] = k  # a label outside the classes, in the last pixel
    with pytest.raises(InputError, match=str(k)):
        confusion_matrix(truth, prediction, k, ignore)


def naive_confusion_fast(truth: np.ndarray, prediction: np.ndarray, k: int, ignore: int | None) -> np.ndarray:
    keep = truth != ignore if ignore is not None else np.ones(truth.shape, bool)
    index = truth[keep].astype(np.int64) * k + prediction[keep]
    return np.bincount(index, minlength=k * k).reshape(k, k)
