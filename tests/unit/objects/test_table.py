"""Per-object tables (segpipe/objects/table.py) against skimage.measure.regionprops_table on the whole image."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr
from skimage import measure

from segpipe.errors import InputError
from segpipe.objects.components import connected_components
from segpipe.objects.grid import blocks_of
from segpipe.objects.table import _distinct, merge_sums, object_sums, object_table, read_with_halo

CHUNKS = [(1, 1), (2, 3), (5, 5), (7, 16), (64, 64)]
EXACT = {
    "label": "object_id",
    "area": "area",
    "centroid-0": "centroid_row",
    "centroid-1": "centroid_col",
    "bbox-0": "bbox_min_row",
    "bbox-1": "bbox_min_col",
    "bbox-2": "bbox_max_row",
    "bbox-3": "bbox_max_col",
    "perimeter": "perimeter",
    "equivalent_diameter_area": "equivalent_diameter",
}


def scene(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A class mask, its 8-connected ids, a 3-band uint8 image and a confidence image."""
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(5, 50)), int(rng.integers(5, 50)))
    mask = ((rng.random(shape) < 0.6) * rng.integers(1, 3, shape)).astype(np.uint8)
    ids = measure.label(mask, background=0, connectivity=2).astype(np.uint32)
    return mask, ids, rng.integers(0, 256, (3, *shape)).astype(np.uint8), rng.random(shape)


def reference(ids: np.ndarray, image: np.ndarray) -> dict[str, np.ndarray]:
    properties = ["label", "area", "centroid", "bbox", "perimeter", "equivalent_diameter_area", "intensity_mean"]
    table = measure.regionprops_table(ids, intensity_image=np.moveaxis(image, 0, -1), properties=properties)
    return {key: np.asarray(value) for key, value in table.items()}


@pytest.mark.parametrize("seed", range(5))
def test_every_shared_column_equals_regionprops_exactly_in_every_chunking(seed: int) -> None:
    mask, ids, image, _ = scene(seed)
    expected = reference(ids, image)
    for chunks in CHUNKS:
        table = object_table(ids, mask, image, chunks=chunks)
        for theirs, ours in EXACT.items():
            np.testing.assert_array_equal(getattr(table, ours), expected[theirs], err_msg=f"{ours} {chunks}")


@pytest.mark.parametrize("seed", range(3))
def test_mean_intensity_per_band_equals_regionprops_exactly_for_integer_images(seed: int) -> None:
    mask, ids, image, _ = scene(10 + seed)
    expected = reference(ids, image)
    table = object_table(ids, mask, image, chunks=(4, 6))
    for band in range(3):
        np.testing.assert_array_equal(table.mean_intensity[:, band], expected[f"intensity_mean-{band}"])


def test_a_single_band_image_gives_one_mean_column() -> None:
    mask, ids, image, _ = scene(20)
    expected = measure.regionprops_table(ids, intensity_image=image[0], properties=["intensity_mean"])
    table = object_table(ids, mask, image[0], chunks=(3, 3))
    np.testing.assert_array_equal(table.mean_intensity[:, 0], expected["intensity_mean"])


def test_mean_confidence_equals_regionprops_to_rounding() -> None:
    mask, ids, _, confidence = scene(21)
    expected = measure.regionprops_table(ids, intensity_image=confidence, properties=["intensity_mean"])
    table = object_table(ids, mask, confidence=confidence, chunks=(5, 4))
    np.testing.assert_allclose(table.mean_confidence, expected["intensity_mean"], rtol=1e-13, atol=0)


def test_each_object_has_the_class_of_its_pixels() -> None:
    mask, ids, _, _ = scene(22)
    table = object_table(ids, mask, chunks=(4, 4))
    first = np.unique(ids.ravel(), return_index=True)[1][1:]
    np.testing.assert_array_equal(table.object_class, mask.ravel()[first])


def test_touches_edge_marks_objects_on_the_image_border() -> None:
    mask, ids, image, _ = scene(23)
    expected = reference(ids, image)
    table = object_table(ids, mask, chunks=(6, 6))
    touches = (expected["bbox-0"] == 0) | (expected["bbox-1"] == 0)
    touches |= (expected["bbox-2"] == ids.shape[0]) | (expected["bbox-3"] == ids.shape[1])
    np.testing.assert_array_equal(table.touches_edge, touches)


def test_a_ring_spanning_four_chunks_has_the_regionprops_perimeter() -> None:
    mask = np.zeros((20, 20), np.uint8)
    mask[3:17, 3:17] = 1
    mask[7:13, 7:13] = 0
    ids = measure.label(mask).astype(np.uint32)
    table = object_table(ids, mask, chunks=(10, 10))
    assert table.perimeter[0] == measure.regionprops(ids)[0].perimeter


def test_the_table_reads_zarr_id_images_made_by_connected_components(tmp_path) -> None:
    mask, _, image, _ = scene(24)
    ids = zarr.create_array(tmp_path / "ids.zarr", shape=mask.shape, chunks=(8, 8), dtype="uint32")
    connected_components(mask, ids, [1, 2], 8, chunks=(8, 8))
    table = object_table(ids, mask, image)
    expected = reference(ids[:], image)
    np.testing.assert_array_equal(table.perimeter, expected["perimeter"])


def test_merging_partial_sums_in_two_stages_is_the_same_as_in_one() -> None:
    mask, ids, image, _ = scene(25)
    parts = [
        object_sums(read_with_halo(ids, b), b, mask[b.slices], image[(..., *b.slices)]) for b in blocks_of(ids, (4, 4))
    ]
    once = merge_sums(parts)
    twice = merge_sums([merge_sums(parts[: len(parts) // 2]), merge_sums(parts[len(parts) // 2 :])])
    np.testing.assert_array_equal(twice.patterns, once.patterns)


def test_read_with_halo_pads_beyond_the_image_with_zeros() -> None:
    ids = np.arange(1, 17, dtype=np.uint32).reshape(4, 4)
    window = read_with_halo(ids, blocks_of(ids, (2, 2))[0], halo=2)
    np.testing.assert_array_equal(window[:2], 0)


def test_the_table_writes_parquet_with_one_column_per_band(tmp_path) -> None:
    mask, ids, image, confidence = scene(26)
    table = object_table(ids, mask, image, confidence, chunks=(8, 8))
    table.write_parquet(tmp_path / "objects.parquet")
    read = pq.read_table(tmp_path / "objects.parquet")
    assert read.column_names == [
        "object_id",
        "class",
        "area",
        "centroid_row",
        "centroid_col",
        "bbox_min_row",
        "bbox_min_col",
        "bbox_max_row",
        "bbox_max_col",
        "perimeter",
        "equivalent_diameter",
        "touches_edge",
        "mean_intensity_0",
        "mean_intensity_1",
        "mean_intensity_2",
        "mean_confidence",
    ]
    assert read.num_rows == len(table)


def test_an_image_of_another_shape_is_refused() -> None:
    mask, ids, _, _ = scene(27)
    with pytest.raises(InputError, match="the image is"):
        object_table(ids, mask, np.zeros((3, 2, 2), np.uint8), chunks=(4, 4))


def test_an_empty_id_image_gives_an_empty_table() -> None:
    ids = np.zeros((6, 6), np.uint32)
    assert len(object_table(ids, ids.astype(np.uint8), chunks=(3, 3))) == 0


@pytest.mark.parametrize("spread", [3, 10_000_000], ids=["counted", "sorted"])
def test_a_blocks_distinct_ids_are_what_np_unique_gives_whether_counted_or_sorted(spread: int) -> None:
    rng = np.random.default_rng(spread)
    values = (rng.integers(0, spread * 1000, 1000) + 7).astype(np.uint32)
    found, first, inverse, counts = _distinct(values)
    expected = np.unique(values, return_index=True, return_inverse=True, return_counts=True)
    for ours, theirs in zip((found, first, inverse, counts), expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    assert found.dtype == values.dtype
