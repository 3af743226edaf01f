"""Confusion matrices of label arrays: ``confusion[t, p]`` counts truth class ``t`` predicted as ``p``.

Counts are in pixels; pixels whose truth is ``ignore_index`` are left out (see ``segpipe.metrics`` for the scores and
their conventions). Pure numpy; chunk matrices sum to the whole-image matrix.

Small integer labels are counted as one-byte codes block by block (``BLOCK`` pixels), other dtypes by an int64
``bincount``; both give the same matrix.
"""

from __future__ import annotations

import functools

import numpy as np

from segpipe.errors import InputError

BLOCK = 1 << 20
"""Pixels per block in ``confusion_matrix``: a block's codes (1 byte each) stay in cache."""


def confusion_matrix(
    truth: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """(K, K) int64 confusion matrix of two equally shaped label arrays.

    Raises:
        InputError: a truth (not ignored) or prediction label lies outside 0..K-1.
    """
    truth, prediction = np.ravel(truth), np.ravel(prediction)
    if truth.shape != prediction.shape:
        raise InputError(f"truth has {truth.size} pixels but prediction has {prediction.size}")
    _check_prediction(prediction, num_classes)
    if _small_int(truth.dtype) and _small_int(prediction.dtype) and (num_classes + 2) * num_classes < 1 << 16:
        return _confusion_by_codes(truth, prediction, num_classes, ignore_index)
    return _confusion_general(truth, prediction, num_classes, ignore_index)


def _small_int(dtype: np.dtype) -> bool:
    return dtype.kind in "uib" and dtype.itemsize <= 2


def _check_prediction(prediction: np.ndarray, num_classes: int) -> None:
    if not prediction.size:
        return
    low = 0 if prediction.dtype.kind in "ub" else prediction.min()
    if low < 0 or prediction.max() >= num_classes:
        raise InputError(f"prediction label outside 0..{num_classes - 1}")


def _confusion_by_codes(
    truth: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_index: int | None
) -> np.ndarray:
    """Count the codes ``row(truth) + prediction`` block by block, in uint8 when (K + 2) K <= 256.

    ``row`` is ``truth * K`` when every truth label is a class and none is ignored (checked first: two fast
    passes); otherwise a lookup table that also sends ignored pixels to row K and labels outside the classes
    to row K + 1, which raises.
    """
    k = num_classes
    bins = (k + 2) * k
    direct = (
        truth.dtype.kind in "ub"
        and truth.size
        and int(truth.max()) < k
        and (ignore_index is None or not (truth == ignore_index).any())
    )
    lut = None if direct else _row_offsets(truth.dtype.str, k, ignore_index)
    bits = truth.view(f"u{truth.dtype.itemsize}")
    codes = np.empty(min(BLOCK, truth.size), np.uint8 if bins <= 256 else np.uint16)
    counts = np.zeros(bins, np.int64)
    for start in range(0, truth.size, BLOCK):
        part = codes[: min(BLOCK, truth.size - start)]
        if lut is None:
            np.multiply(bits[start : start + part.size], codes.dtype.type(k), out=part, casting="unsafe")
        else:
            np.take(lut, bits[start : start + part.size], out=part, mode="clip")
        np.add(part, prediction[start : start + part.size], out=part, casting="unsafe")
        counts += _histogram(part, bins)
    table = counts.reshape(k + 2, k)
    if table[k + 1].any():
        _raise_bad_truth(truth, k, ignore_index)
    return table[:k].copy()


def _histogram(codes: np.ndarray, bins: int) -> np.ndarray:
    """``np.bincount(codes, minlength=bins)``, for many uint8 codes counted two at a time.

    Such codes are counted as uint16 pairs (half the elements to count), then split back by summing the 256 x 256 pair
    table along each axis.
    """
    if codes.dtype != np.uint8 or codes.size < 1 << 16:
        return np.bincount(codes, minlength=bins)[:bins]
    even = codes.size - codes.size % 2
    pairs = np.bincount(codes[:even].view(np.uint16), minlength=1 << 16).reshape(256, 256)
    counts = pairs.sum(axis=0) + pairs.sum(axis=1)
    if codes.size % 2:
        counts[codes[-1]] += 1
    return np.asarray(counts[:bins])


@functools.lru_cache(maxsize=64)
def _row_offsets(dtype_str: str, num_classes: int, ignore_index: int | None) -> np.ndarray:
    """Table from every value of a <= 16-bit integer dtype (indexed by its unsigned bit pattern) to a code.

    The code is ``value * K`` for a class, ``K * K`` for ``ignore_index`` and ``(K + 1) * K`` for anything else; the
    table is uint8 when the codes fit.
    """
    dtype = np.dtype(dtype_str)
    bits = np.arange(1 << (8 * dtype.itemsize), dtype=f"u{dtype.itemsize}")
    values = bits.view(dtype).astype(np.int64) if dtype.kind != "b" else bits.astype(np.int64)
    invalid = (num_classes + 1) * num_classes
    lut = np.where((values >= 0) & (values < num_classes), values * num_classes, invalid)
    if ignore_index is not None:
        lut[values == ignore_index] = num_classes * num_classes
    lut = lut.astype(np.uint8 if (num_classes + 2) * num_classes <= 256 else np.uint16)
    lut.flags.writeable = False
    return lut


def _confusion_general(
    truth: np.ndarray, prediction: np.ndarray, num_classes: int, ignore_index: int | None
) -> np.ndarray:
    """Any dtype (wide integers, floats truncated as by ``astype``): mask, validate, bincount in int64."""
    truth = truth.astype(np.int64, copy=False)
    if ignore_index is not None:
        keep = truth != ignore_index
        if not keep.all():
            truth, prediction = truth[keep], prediction[keep]
    if truth.size and (truth.min() < 0 or truth.max() >= num_classes):
        _raise_bad_truth(truth, num_classes, None)
    index = truth * num_classes
    index += prediction.astype(np.int64, copy=False)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _raise_bad_truth(truth: np.ndarray, num_classes: int, ignore_index: int | None) -> None:
    values = np.unique(truth).astype(np.int64)
    if ignore_index is not None:
        values = values[values != ignore_index]
    bad = int(values.max() if values.max() >= num_classes else values.min())
    raise InputError(f"truth label {bad} is outside the model's classes 0..{num_classes - 1}")
