"""A chunk's windows (segpipe/windows.py): keeping labels tile by tile equals keeping the logits to the end."""

from __future__ import annotations

import numpy as np
import pytest

from segpipe.tiling import Region
from segpipe.windows import TrimWindows, label_dtype, predict_labels, softmax_in_place


@pytest.mark.parametrize("keep_probabilities", [False, True])
def test_streaming_trim_windows_predict_what_the_kept_logits_do(keep_probabilities: bool) -> None:
    rng = np.random.default_rng(3)
    halo, tile, classes = 4, 8, 3
    window = rng.normal(size=(2, 21 + 2 * halo, 13 + 2 * halo)).astype(np.float32)
    region = Region(0, 21, 0, 13)
    kept = TrimWindows(window, region, halo, tile, 2, classes, keep_probabilities=keep_probabilities)
    streamed = TrimWindows(window, region, halo, tile, 2, classes, True, keep_probabilities)
    for index in range(len(kept)):
        logits = rng.normal(size=(classes, kept.edge, kept.edge)).astype(np.float32)
        kept.add(index, logits.copy())
        streamed.add(index, logits.copy())
    whole, tiled = kept.prediction(), streamed.prediction()
    np.testing.assert_array_equal(tiled.labels, whole.labels)
    assert tiled.labels.dtype == label_dtype(classes)
    assert tiled.labels.shape == (21, 13)
    assert tiled.confidence_sum == pytest.approx(whole.confidence_sum, rel=1e-6)
    if keep_probabilities:
        assert tiled.probabilities is not None
        assert whole.probabilities is not None
        np.testing.assert_array_equal(tiled.probabilities, whole.probabilities)
    else:
        assert tiled.probabilities is None
        assert whole.probabilities is None
    with pytest.raises(ValueError, match="labels, not logits"):
        streamed.logits()


def test_softmax_in_place_and_the_confidence_it_returns() -> None:
    logits = np.array([[[0.0, 1000.0]], [[np.log(3.0), 999.0]]], np.float32)  # (K=2, 1, 2), one huge pair
    expected = np.exp(logits - logits.max(axis=0)) / np.exp(logits - logits.max(axis=0)).sum(axis=0)
    confidence = softmax_in_place(logits)
    np.testing.assert_allclose(logits, expected, rtol=1e-6)
    np.testing.assert_allclose(confidence, expected.max(axis=0), rtol=1e-6)
    assert predict_labels(np.array([[[0.0]], [[1.0]]], np.float32), False).labels.tolist() == [[1]]
