"""Object metrics from per-chunk overlap counts (segpipe/objects/overlap.py) against today's whole-image
segpipe.objects functions, on random and synthetic masks chunked several ways."""

from __future__ import annotations

import math

import numpy as np
import pytest
import zarr

from segpipe.errors import InputError
from segpipe.objects import object_metrics, object_overlap, score_objects
from segpipe.objects.components import connected_components
from segpipe.objects.grid import blocks_of
from segpipe.objects.overlap import chunked_object_metrics, merge_counts, overlap_counts, to_overlap

CHUNKS = [(1, 1), (3, 7), (8, 8), (64, 64)]


def same(x: object, y: object) -> bool:
    return x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))


def rows_equal(a: list[dict], b: list[dict]) -> bool:
    """Metric rows equal value for value, NaN equal to NaN."""
    return len(a) == len(b) and all(
        ra.keys() == rb.keys() and all(same(ra[k], rb[k]) for k in ra) for ra, rb in zip(a, b, strict=True)
    )


def instances(seed: int, shape: tuple[int, int] = (40, 33)) -> tuple[np.ndarray, np.ndarray]:
    """Blocky instance truth and a noisy copy of it as prediction (ids not in the same order)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 25, (shape[0] // 3 + 1, shape[1] // 3 + 1))
    truth = np.kron(coarse, np.ones((3, 3), np.int64))[: shape[0], : shape[1]]
    prediction = np.where(rng.random(shape) < 0.15, rng.integers(0, 25, shape), (truth * 7) % 31)
    return truth.astype(np.uint32), prediction.astype(np.uint32)


@pytest.mark.parametrize("seed", range(5))
def test_chunked_metrics_equal_whole_image_metrics_in_every_chunking(seed: int) -> None:
    truth, prediction = instances(seed)
    expected = object_metrics(truth, prediction)
    for chunks in CHUNKS:
        assert rows_equal(chunked_object_metrics(truth, prediction, chunks=chunks), expected), chunks


@pytest.mark.parametrize("field", ["true_ids", "pred_ids", "iou"])
def test_the_merged_overlap_is_the_whole_image_overlap(field: str) -> None:
    truth, prediction = instances(9)
    merged = to_overlap(
        merge_counts([overlap_counts(truth[b.slices], prediction[b.slices]) for b in blocks_of(truth, (5, 4))])
    )
    np.testing.assert_array_equal(getattr(merged, field), getattr(object_overlap(truth, prediction), field))


@pytest.mark.parametrize("seed", range(4))
def test_components_then_chunked_metrics_equal_score_objects(seed: int) -> None:
    rng = np.random.default_rng(50 + seed)
    truth, _ = instances(seed, (36, 30))
    semantic = (rng.random(truth.shape) < 0.55).astype(np.uint8)
    ids = zarr.create_array(zarr.storage.MemoryStore(), shape=truth.shape, chunks=(7, 11), dtype="uint32")
    connected_components(semantic, ids, [1], 4, chunks=(7, 11))
    assert rows_equal(chunked_object_metrics(truth, ids), score_objects(truth, semantic, foreground=1))


def test_synthetic_squares_shifted_by_one_pixel_match_at_the_expected_thresholds() -> None:
    truth = np.zeros((30, 30), np.uint32)
    prediction = np.zeros((30, 30), np.uint32)
    truth[2:12, 2:12], prediction[3:13, 2:12] = 1, 5  # IoU 90/110
    truth[15:25, 15:25], prediction[15:25, 15:25] = 2, 9  # IoU 1
    results = {row["threshold"]: row for row in chunked_object_metrics(truth, prediction, chunks=(4, 4))}
    assert [results[t]["tp"] for t in (0.5, 0.8, 0.85)] == [2, 2, 1]


def test_the_counts_of_one_block_are_its_areas_and_pair_counts() -> None:
    counts = overlap_counts(np.array([[1, 1, 2, 0]]), np.array([[3, 0, 3, 3]]))
    assert counts.pair_count.tolist() == [1, 1]


def test_predicted_ids_beyond_uint32_give_the_same_metrics() -> None:
    truth, prediction = instances(3)
    shifted = np.where(prediction > 0, prediction.astype(np.uint64) + 2**40, 0)
    assert rows_equal(chunked_object_metrics(truth, shifted, chunks=(6, 6)), object_metrics(truth, prediction))


def test_empty_truth_and_prediction_give_nan_ratios_as_the_whole_image_code() -> None:
    zeros = np.zeros((6, 6), np.uint32)
    assert rows_equal(chunked_object_metrics(zeros, zeros, chunks=(3, 3)), object_metrics(zeros, zeros))


def test_truth_ids_beyond_uint32_are_refused() -> None:
    truth = np.zeros((4, 4), np.uint64)
    truth[1, 1] = 2**32
    with pytest.raises(InputError, match=r"truth instance id 4294967296 is beyond uint32 \(at most 4294967295\)$"):
        chunked_object_metrics(truth, np.zeros((4, 4), np.uint32), chunks=(2, 2))


def test_negative_truth_ids_are_refused() -> None:
    with pytest.raises(InputError, match="truth instance id -1 is negative"):
        overlap_counts(np.full((2, 2), -1), np.zeros((2, 2), np.uint32))


def test_float_predictions_are_refused() -> None:
    with pytest.raises(InputError, match="predicted instance ids must be integers, found float64"):
        overlap_counts(np.zeros((2, 2), np.uint32), np.zeros((2, 2)))


def test_truth_and_prediction_of_different_shapes_are_refused() -> None:
    with pytest.raises(InputError, match=r"truth is \(4, 4\) but prediction is \(4, 5\)"):
        chunked_object_metrics(np.zeros((4, 4), np.uint32), np.zeros((4, 5), np.uint32), chunks=(2, 2))
