"""Chunked connected components (segpipe/objects/components.py, grid.py, merge.py) against whole-image
labelling by scipy.ndimage.label and skimage.measure.label, on random and hand-made masks chunked many ways."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from scipy import ndimage
from skimage import measure

from segpipe.errors import ConfigError, InputError
from segpipe.objects.components import (
    chunk_borders,
    connected_components,
    create_id_array,
    label_block,
    relabel_chunk,
)
from segpipe.objects.grid import Block, blocks_of, id_dtype
from segpipe.objects.merge import merge_borders

CHUNKS = [(1, 1), (1, 7), (5, 1), (3, 4), (8, 8), (13, 6), (64, 64)]


def components(mask: np.ndarray, classes: list[int], connectivity: int, chunks, by_class: bool = True) -> np.ndarray:
    out = np.zeros(mask.shape, np.uint32)
    connected_components(mask, out, classes, connectivity, by_class=by_class, chunks=chunks)
    return out


def structure(connectivity: int) -> np.ndarray:
    return ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def random_mask(seed: int, classes: int = 3, density: float = 0.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 45)), int(rng.integers(1, 45)))
    values = rng.integers(1, classes + 1, shape)
    return (values * (rng.random(shape) < density)).astype(np.uint8)


def test_skimage_numbers_components_by_first_pixel_in_raster_order() -> None:
    labels = measure.label(random_mask(0, classes=3), background=0, connectivity=2)
    ids, first = np.unique(labels, return_index=True)
    assert list(ids[1:][np.argsort(first[1:])]) == list(range(1, ids.size))


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("seed", range(6))
def test_several_classes_equal_skimage_label_in_every_chunking(seed: int, connectivity: int) -> None:
    mask = random_mask(seed)
    expected = measure.label(mask, background=0, connectivity=1 if connectivity == 4 else 2)
    for chunks in CHUNKS:
        np.testing.assert_array_equal(components(mask, [1, 2, 3], connectivity, chunks), expected)


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("seed", range(6))
def test_one_class_equals_ndimage_label_in_every_chunking(seed: int, connectivity: int) -> None:
    mask = random_mask(100 + seed, classes=2, density=0.8)
    expected, _ = ndimage.label(mask == 2, structure(connectivity))
    for chunks in CHUNKS:
        np.testing.assert_array_equal(components(mask, [2], connectivity, chunks), expected)


def test_classes_together_equal_ndimage_label_of_their_union() -> None:
    mask = random_mask(7, classes=3, density=0.9)
    expected, _ = ndimage.label(np.isin(mask, [1, 3]), structure(4))
    np.testing.assert_array_equal(components(mask, [1, 3], 4, (4, 5), by_class=False), expected)


def test_touching_objects_of_different_classes_stay_apart() -> None:
    mask = np.array([[1, 1, 2, 2]], np.uint8)
    np.testing.assert_array_equal(components(mask, [1, 2], 4, (1, 1)), [[1, 1, 2, 2]])


def test_a_one_pixel_wide_line_through_many_chunks_is_one_object() -> None:
    mask = np.zeros((20, 20), np.uint8)
    mask[3, :] = 1
    mask[:, 11] = 1
    labels = components(mask, [1], 4, (3, 3))
    assert set(np.unique(labels)) == {0, 1}


def test_a_u_shape_whose_arms_meet_in_the_last_chunk_row_gets_the_left_arm_id() -> None:
    mask = np.zeros((12, 12), np.uint8)
    mask[:, 1] = 1  # left arm, from row 0
    mask[2:, 9] = 1  # right arm starts lower: its first pixel comes later
    mask[11, 1:10] = 1  # the bottom joins them in the last chunk row
    mask[0, 5] = 1  # a dot between the arms, numbered after the left arm only
    labels = components(mask, [1], 4, (4, 4))
    np.testing.assert_array_equal(labels, ndimage.label(mask)[0])


def test_a_spiral_spanning_nine_chunks_gets_the_whole_image_ids() -> None:
    mask = np.zeros((15, 15), np.uint8)
    mask[0, :] = mask[:, 14] = mask[14, :] = mask[2:, 0] = 1
    mask[2, 0:12] = mask[2:12, 12] = mask[12, 2:13] = mask[4:12, 2] = 1
    mask[6, 7] = 1  # an object inside the spiral
    labels = components(mask, [1], 4, (5, 5))
    np.testing.assert_array_equal(labels, ndimage.label(mask)[0])


@pytest.mark.parametrize(("connectivity", "objects"), [(4, 2), (8, 1)])
def test_a_diagonal_across_a_chunk_corner_joins_only_with_8_connectivity(connectivity: int, objects: int) -> None:
    mask = np.zeros((4, 4), np.uint8)
    mask[1, 1] = mask[2, 2] = 1
    assert components(mask, [1], connectivity, (2, 2)).max() == objects


@pytest.mark.parametrize(("connectivity", "objects"), [(4, 2), (8, 1)])
def test_an_antidiagonal_across_a_chunk_corner_joins_only_with_8_connectivity(connectivity: int, objects: int) -> None:
    mask = np.zeros((4, 4), np.uint8)
    mask[1, 2] = mask[2, 1] = 1
    assert components(mask, [1], connectivity, (2, 2)).max() == objects


def test_the_same_mask_chunked_any_way_gives_byte_identical_zarr_id_images(tmp_path) -> None:
    mask = random_mask(11, classes=2, density=0.7)
    stored = zarr.create_array(tmp_path / "mask.zarr", shape=mask.shape, chunks=(7, 9), dtype="uint8")
    stored[:] = mask
    written = []
    for n, chunks in enumerate([None, (1, 1), (16, 3), (45, 45)]):

        def make(count: int, dtype: np.dtype, n: int = n, chunks=chunks):
            return create_id_array(tmp_path / f"ids{n}.zarr", mask.shape, chunks or (7, 9), count)

        result = connected_components(stored, make, [1, 2], 8, chunks=chunks)
        written.append(zarr.open_array(tmp_path / f"ids{n}.zarr", mode="r")[:].tobytes())
        assert result.dtype == np.uint32
    assert len(set(written)) == 1


def test_the_relabel_pass_is_idempotent_per_chunk() -> None:
    mask = random_mask(12, classes=2, density=0.7)
    grid = blocks_of(mask, (6, 6))
    plan = merge_borders([chunk_borders(mask[b.slices], b, [1, 2], 4) for b in grid], 4)
    b = grid[len(grid) // 2]
    first = relabel_chunk(mask[b.slices], plan.chunks[b.index], [1, 2], 4)
    again = relabel_chunk(mask[b.slices], plan.chunks[b.index], [1, 2], 4)
    assert first.tobytes() == again.tobytes()


def test_the_count_is_the_number_of_whole_image_components() -> None:
    mask = random_mask(13)
    out = np.zeros(mask.shape, np.uint32)
    result = connected_components(mask, out, [1, 2, 3], 4, chunks=(5, 5))
    assert result.count == measure.label(mask, background=0, connectivity=1).max()


def test_an_empty_mask_has_no_components() -> None:
    mask = np.zeros((9, 9), np.uint8)
    assert connected_components(mask, np.zeros((9, 9), np.uint32), [1], 4, chunks=(4, 4)).count == 0


@pytest.mark.parametrize(("count", "dtype"), [(0, np.uint32), (2**32 - 1, np.uint32), (2**32, np.uint64)])
def test_ids_are_uint32_until_the_count_needs_uint64(count: int, dtype: type) -> None:
    assert id_dtype(count) == np.dtype(dtype)


def test_the_id_array_switches_to_uint64_beyond_uint32() -> None:
    array = create_id_array(zarr.storage.MemoryStore(), (4, 4), (2, 2), 2**32)
    assert array.dtype == np.uint64


def test_a_border_record_grows_with_the_border_not_with_the_objects_inside() -> None:
    block = np.zeros((64, 64), np.uint8)
    block[2:-2:2, 2:-2:2] = 1  # 900 isolated interior dots
    block[0, :] = 1  # one object along the top
    record = chunk_borders(block, Block((0, 0), (0, 0), block.shape), [1], 4)
    assert record.count == 901
    assert record.ids.size == 1
    assert record.size <= 4 * 64 + 64 + 4 * 64 + 5


def test_a_border_record_is_linear_in_the_border_length_for_noise() -> None:
    rng = np.random.default_rng(3)
    sizes = []
    for side in (32, 64, 128):
        block = (rng.random((side, side)) < 0.5).astype(np.uint8)
        sizes.append(chunk_borders(block, Block((0, 0), (0, 0), block.shape), [1], 4).size)
    assert all(size <= 10 * 4 * side for size, side in zip(sizes, (32, 64, 128), strict=True))


@pytest.mark.parametrize("connectivity", [0, 6, 26])
def test_a_connectivity_other_than_4_or_8_is_refused(connectivity: int) -> None:
    with pytest.raises(ConfigError, match=f"connectivity must be 4 or 8, got {connectivity}$"):
        connected_components(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint32), [1], connectivity, chunks=(2, 2))


def test_a_3d_mask_is_refused() -> None:
    with pytest.raises(InputError, match=r"2-D mask, got shape \(2, 4, 4\)"):
        connected_components(np.zeros((2, 4, 4), np.uint8), None, [1], 4, chunks=(2, 2))


def test_a_float_mask_is_refused() -> None:
    with pytest.raises(InputError, match="must hold integers, found float32"):
        connected_components(np.zeros((4, 4), np.float32), None, [1], 4, chunks=(2, 2))


def test_a_mask_without_chunks_needs_a_block_shape() -> None:
    with pytest.raises(ConfigError, match=r"pass chunks=\(rows, cols\)"):
        connected_components(np.zeros((4, 4), np.uint8), None, [1], 4)


def test_a_3d_block_is_refused_by_the_worker_step() -> None:
    with pytest.raises(InputError, match="2-D mask"):
        label_block(np.zeros((1, 2, 2), np.uint8), [1])


def test_merging_an_incomplete_grid_is_refused() -> None:
    mask = np.ones((4, 4), np.uint8)
    records = [chunk_borders(mask[b.slices], b, [1], 4) for b in blocks_of(mask, (2, 2))]
    with pytest.raises(InputError, match="not a full grid"):
        merge_borders(records[:-1], 4)


def test_uneven_dask_style_chunks_give_the_same_ids() -> None:
    mask = random_mask(21)[:14, :35]
    chunks = ((3, 10, 1), (5, 29, 1))
    expected = measure.label(mask, background=0, connectivity=1)
    np.testing.assert_array_equal(components(mask, [1, 2, 3], 4, chunks), expected)
