"""Streaming evaluation: per-chunk confusion matrices summed in a tree (segpipe/scoring.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import dask
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segpipe.config import EvalConfig
from segpipe.errors import InputError
from segpipe.metrics import confusion_matrix
from segpipe.scoring import ForegroundGrid, evaluate, evaluate_split, tree_sum
from segpipe.tiling import Region

from .helpers import write_zarr


@settings(deadline=None, max_examples=25)
@given(
    st.integers(1, 60),
    st.integers(1, 60),
    st.integers(2, 4),
    st.integers(1, 25),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_evaluate_over_chunks_equals_whole_array_confusion(height, width, classes, chunk, ignore, seed) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, (height, width)).astype(np.uint8)
    if ignore:
        truth[rng.random(truth.shape) < 0.2] = 255
    prediction = rng.integers(0, classes, (height, width)).astype(np.uint8)
    config = EvalConfig(ignore_index=255 if ignore else None)
    with tempfile.TemporaryDirectory() as tmp:
        pred_source = write_zarr(Path(tmp) / "pred.zarr", prediction, (7, 11))
        truth_source = write_zarr(Path(tmp) / "truth.zarr", truth, (13, 5))
        result = evaluate(pred_source, truth_source, classes, config, chunk)
    np.testing.assert_array_equal(result, confusion_matrix(truth, prediction, classes, config.ignore_index))
    assert result.dtype == np.int64


def test_truth_instances_count_every_id_above_zero_as_class_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    instances = rng.integers(0, 700, (45, 38)).astype(np.uint16)
    instances[rng.random(instances.shape) < 0.4] = 0
    prediction = rng.integers(0, 2, instances.shape).astype(np.uint8)
    pred = write_zarr(tmp_path / "p.zarr", prediction, (8, 8))
    truth = write_zarr(tmp_path / "t.zarr", instances, (9, 10))
    result = evaluate(pred, truth, 2, EvalConfig(truth_instances=True), 16)
    np.testing.assert_array_equal(result, confusion_matrix((instances > 0).astype(np.uint8), prediction, 2))
    with pytest.raises(InputError):  # without the flag, ids are out of range
        evaluate(pred, truth, 2, EvalConfig(), 16)


def test_truth_label_out_of_range_names_the_truth_file_and_place(tmp_path: Path) -> None:
    truth = np.zeros((20, 20), np.uint8)
    truth[15, 12] = 9
    pred = write_zarr(tmp_path / "p.zarr", np.zeros((20, 20), np.uint8))
    truth_source = write_zarr(tmp_path / "t.zarr", truth)
    with pytest.raises(InputError) as info:
        evaluate(pred, truth_source, 2, EvalConfig(), 8)
    message = str(info.value)
    assert message.startswith(truth_source.path)
    assert "9" in message
    assert "y=8, x=8" in message


@pytest.mark.parametrize("parts", [1, 2, 8, 9, 65, 100])
@pytest.mark.parametrize("fan_in", [2, 3, 8])
def test_tree_sum_adds_every_part(parts: int, fan_in: int) -> None:
    arrays = [np.full((2, 2), i, np.int64) for i in range(parts)]
    (total,) = dask.compute(tree_sum([dask.delayed(a) for a in arrays], fan_in))
    np.testing.assert_array_equal(total, np.full((2, 2), sum(range(parts))))


def test_instance_truth_maps_to_classes(tmp_path) -> None:
    """Instance ids map to class ids through truth_mapping, chunk by chunk; 0 stays background."""
    from segpipe.config import EvalConfig
    from segpipe.metrics import confusion_matrix
    from segpipe.scoring import evaluate
    from tests.unit.helpers import write_zarr

    instances = np.zeros((30, 40), np.uint16)
    instances[2:10, 3:12] = 17
    instances[15:28, 20:35] = 230
    classes = np.where(instances == 17, 1, np.where(instances == 230, 2, 0)).astype(np.uint8)
    prediction = classes.copy()
    prediction[15:20, 20:35] = 1  # part of object 230 predicted as class 1
    truth = write_zarr(tmp_path / "t.zarr", instances, (11, 13))
    pred = write_zarr(tmp_path / "p.zarr", prediction, (11, 13))
    config = EvalConfig(truth_mapping=((17, 1), (230, 2)))
    got = evaluate(pred, truth, 3, config, chunk=8)
    np.testing.assert_array_equal(got, confusion_matrix(classes, prediction, 3))


def test_foreground_grid_takes_the_cell_under_each_pixel_centre() -> None:
    cells = np.array([[True, False], [False, True]])
    grid = ForegroundGrid(cells, (2 / 6, 2 / 5))  # a 6 x 5 grid on 2 x 2 cells
    whole = grid.at(Region(0, 6, 0, 5))
    assert whole.tolist() == [[True] * 2 + [False] * 3] * 3 + [[False] * 2 + [True] * 3] * 3  # x = 2.5 * 0.4: cell 1
    assert grid.at(Region(2, 4, 1, 4)).tolist() == whole[2:4, 1:4].tolist()
    assert grid.background_pixels(6, 5) == int((~whole).sum())


def test_a_foreground_leaves_its_background_out_of_the_confusion(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    truth, predicted = rng.integers(0, 2, (2, 40, 30)).astype(np.uint8)
    cells = rng.random((4, 3)) < 0.5
    grid = ForegroundGrid(cells, (0.1, 0.1))
    keep = np.repeat(np.repeat(cells, 10, axis=0), 10, axis=1)
    prediction, reference = write_zarr(tmp_path / "p.zarr", predicted), write_zarr(tmp_path / "t.zarr", truth)
    with dask.config.set(scheduler="synchronous"):
        split = evaluate_split(prediction, reference, 2, EvalConfig(), 16, foreground=grid)
    assert np.array_equal(split.sum(axis=0), confusion_matrix(truth[keep], predicted[keep], 2))
    assert grid.background_pixels(40, 30) == int((~keep).sum())


@given(
    cells=st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=4, max_size=4),
    y0=st.integers(0, 39),
    x0=st.integers(0, 29),
    height=st.integers(1, 40),
    width=st.integers(1, 30),
)
@settings(max_examples=60, deadline=None)
def test_touches_says_whether_a_region_holds_a_foreground_pixel(
    cells: list[list[bool]], y0: int, x0: int, height: int, width: int
) -> None:
    grid = ForegroundGrid(np.array(cells), (4 / 40, 3 / 30))
    region = Region(y0, min(40, y0 + height), x0, min(30, x0 + width))
    assert grid.touches(region) == bool(grid.at(region).any())


class CountingReads:
    """An image that counts the regions read from it."""

    def __init__(self, image: object) -> None:
        self.image = image
        self.read_regions: list[tuple[int, int, int, int]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.image, name)

    def read(self, y0: int, y1: int, x0: int, x1: int, stored: object = None) -> np.ndarray:
        self.read_regions.append((y0, y1, x0, x1))
        return self.image.read(y0, y1, x0, x1)  # type: ignore[attr-defined]


def _half_foreground(tmp_path: Path) -> tuple[np.ndarray, np.ndarray, ForegroundGrid, CountingReads, CountingReads]:
    """32 x 32 images in 16-pixel chunks, foreground only in the top-left chunk's cells."""
    rng = np.random.default_rng(8)
    truth, predicted = rng.integers(0, 2, (2, 32, 32)).astype(np.uint8)
    cells = np.zeros((4, 4), bool)
    cells[:2, :2] = True
    prediction = CountingReads(write_zarr(tmp_path / "p.zarr", predicted, (16, 16)))
    reference = CountingReads(write_zarr(tmp_path / "t.zarr", truth, (16, 16)))
    return truth, predicted, ForegroundGrid(cells, (1 / 8, 1 / 8)), prediction, reference


def test_chunks_without_foreground_are_not_read(tmp_path: Path) -> None:
    _, _, grid, prediction, reference = _half_foreground(tmp_path)
    with dask.config.set(scheduler="synchronous"):
        evaluate_split(prediction, reference, 2, EvalConfig(), 16, foreground=grid)  # type: ignore[arg-type]
    assert reference.read_regions == [(0, 16, 0, 16)]


def test_leaving_chunks_without_foreground_out_keeps_the_confusion(tmp_path: Path) -> None:
    truth, predicted, grid, prediction, reference = _half_foreground(tmp_path)
    with dask.config.set(scheduler="synchronous"):
        split = evaluate_split(prediction, reference, 2, EvalConfig(), 16, foreground=grid)  # type: ignore[arg-type]
    np.testing.assert_array_equal(split.sum(axis=0), confusion_matrix(truth[:16, :16], predicted[:16, :16], 2))


def test_no_foreground_at_all_counts_nothing(tmp_path: Path) -> None:
    _, _, _, prediction, reference = _half_foreground(tmp_path)
    empty = ForegroundGrid(np.zeros((4, 4), bool), (1 / 8, 1 / 8))
    split = evaluate_split(prediction, reference, 2, EvalConfig(), 16, foreground=empty)  # type: ignore[arg-type]
    np.testing.assert_array_equal(split, np.zeros((2, 2, 2), np.int64))
