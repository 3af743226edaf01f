"""Objects of a boundary model (segpipe/objects/grow.py): interior components grown into the boundary, exact on
hand-made touching objects and the same however the mask is chunked."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from segpipe.errors import ModelError
from segpipe.objects.grow import (
    InstanceRule,
    Renumbering,
    grow_block,
    grow_ids,
    grown_components,
    parse_instances,
)

RULE = InstanceRule(interior=1, boundary=2, width=2)
CHUNKS = [(1, 1), (1, 5), (4, 1), (3, 4), (7, 7), (11, 6), (64, 64)]


def whole(mask: np.ndarray, rule: InstanceRule = RULE, connectivity: int = 4) -> np.ndarray:
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    interior, _ = ndimage.label(mask == rule.interior, structure=structure)
    return grow_ids(interior.astype(np.uint32), mask, rule, connectivity)


def random_boundary_mask(seed: int) -> np.ndarray:
    """Touching blobs, each an interior core inside a boundary rim, plus stray boundary and interior pixels."""
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(8, 28)), int(rng.integers(8, 28)))
    seeds = np.zeros(shape, np.int32)
    for n in range(1, int(rng.integers(2, 12))):
        seeds[rng.integers(0, shape[0]), rng.integers(0, shape[1])] = n
    blobs = ndimage.grey_dilation(seeds, size=int(rng.integers(3, 9)))
    rims = (ndimage.grey_dilation(blobs, size=3) != blobs) | (ndimage.grey_erosion(blobs, size=3) != blobs)
    mask = np.where(blobs > 0, np.where(rims, 2, 1), 0).astype(np.uint8)
    noise = rng.random(shape)
    mask[noise < 0.03] = 2
    mask[noise > 0.985] = 1
    return mask


def test_two_touching_objects_split_along_their_boundary() -> None:
    mask = np.array(
        [
            [0, 2, 2, 2, 2, 2, 2, 0],
            [2, 1, 1, 2, 2, 1, 1, 2],
            [2, 1, 1, 2, 2, 1, 1, 2],
            [0, 2, 2, 2, 2, 2, 2, 0],
        ],
        np.uint8,
    )
    expected = np.array(
        [
            [0, 1, 1, 1, 2, 2, 2, 0],
            [1, 1, 1, 1, 2, 2, 2, 2],
            [1, 1, 1, 1, 2, 2, 2, 2],
            [0, 1, 1, 1, 2, 2, 2, 0],
        ],
        np.uint32,
    )
    np.testing.assert_array_equal(whole(mask), expected)


def test_a_boundary_pixel_as_far_from_two_objects_goes_to_the_smaller_id() -> None:
    mask = np.array([[1, 2, 2, 2, 1]], np.uint8)
    np.testing.assert_array_equal(whole(mask), [[1, 1, 1, 2, 2]])


def test_boundary_beyond_the_width_stays_background() -> None:
    mask = np.array([[1, 2, 2, 2, 0, 2]], np.uint8)
    np.testing.assert_array_equal(whole(mask), [[1, 1, 1, 0, 0, 0]])


def test_growth_does_not_cross_background() -> None:
    mask = np.array([[1, 0, 2]], np.uint8)
    np.testing.assert_array_equal(whole(mask), [[1, 0, 0]])


def test_boundary_with_no_interior_makes_no_object() -> None:
    mask = np.full((3, 3), 2, np.uint8)
    np.testing.assert_array_equal(whole(mask), np.zeros((3, 3)))


def test_eight_connected_growth_reaches_diagonals_in_one_step() -> None:
    mask = np.array([[1, 0], [0, 2]], np.uint8)
    rule = InstanceRule(1, 2, width=1)
    np.testing.assert_array_equal(whole(mask, rule, 4), [[1, 0], [0, 0]])
    np.testing.assert_array_equal(whole(mask, rule, 8), [[1, 0], [0, 1]])


def test_ids_are_numbered_by_first_interior_pixel_in_raster_order() -> None:
    mask = np.array([[2, 2, 2, 1], [1, 2, 2, 2]], np.uint8)
    np.testing.assert_array_equal(whole(mask, InstanceRule(1, 2, width=1)), [[2, 0, 1, 1], [2, 2, 0, 1]])


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("seed", range(5))
def test_the_grown_id_image_is_the_same_in_every_chunking(seed: int, connectivity: int) -> None:
    mask = random_boundary_mask(seed)
    expected = whole(mask, RULE, connectivity)
    for chunks in CHUNKS:
        np.testing.assert_array_equal(grown_components(mask, RULE, connectivity, chunks), expected)


SMALL = InstanceRule(interior=1, boundary=2, width=2, min_interior=3)


def test_a_tiny_interior_beside_an_object_joins_it() -> None:
    mask = np.array([[1, 1, 1, 2, 1, 2, 0]], np.uint8)
    np.testing.assert_array_equal(whole(mask, SMALL), [[1, 1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(whole(mask), [[1, 1, 1, 1, 2, 2, 0]])  # without the rule: two objects


def test_a_lone_tiny_interior_makes_no_object() -> None:
    mask = np.array([[1, 2, 0, 0, 0, 0], [2, 2, 0, 1, 1, 1]], np.uint8)
    np.testing.assert_array_equal(whole(mask, SMALL), [[0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1]])


def test_kept_interiors_are_renumbered_by_first_pixel() -> None:
    mask = np.array([[1, 0, 1, 1, 1], [0, 0, 0, 0, 0], [1, 1, 1, 0, 1]], np.uint8)
    np.testing.assert_array_equal(whole(mask, SMALL), [[0, 0, 1, 1, 1], [0, 0, 0, 0, 0], [2, 2, 2, 0, 0]])


def test_an_interior_of_exactly_the_minimum_is_kept() -> None:
    mask = np.array([[1, 1, 1, 0, 1, 1]], np.uint8)
    np.testing.assert_array_equal(whole(mask, SMALL), [[1, 1, 1, 0, 0, 0]])


@pytest.mark.parametrize("connectivity", [4, 8])
@pytest.mark.parametrize("seed", [0, 4, 5, 7, 8])  # masks with interiors both under and over 13 pixels
def test_dropping_small_interiors_gives_the_same_ids_in_every_chunking(seed: int, connectivity: int) -> None:
    mask = random_boundary_mask(seed)
    rule = InstanceRule(1, 2, width=2, min_interior=13)
    expected = whole(mask, rule, connectivity)
    plain = whole(mask, RULE, connectivity)
    assert 0 < expected.max() < plain.max()  # some interiors dropped, some kept
    np.testing.assert_array_equal(np.unique(expected), np.arange(expected.max() + 1))  # ids 1.. without gaps
    for chunks in CHUNKS:
        np.testing.assert_array_equal(grown_components(mask, rule, connectivity, chunks), expected)


def test_a_renumbering_refuses_an_id_it_does_not_know() -> None:
    plan = Renumbering(np.array([2, 5]), np.array([1, 0]))
    np.testing.assert_array_equal(plan.apply(np.array([[0, 2, 5]], np.uint32)), [[0, 1, 0]])
    with pytest.raises(ModelError, match="missing from its block's renumbering"):
        plan.apply(np.array([[3]], np.uint32))


def test_random_masks_have_grown_pixels() -> None:
    mask = random_boundary_mask(0)
    grown = whole(mask)
    assert np.count_nonzero(grown[mask == 2]) > 0


def test_grown_objects_keep_every_interior_pixel() -> None:
    mask = random_boundary_mask(3)
    interior, _ = ndimage.label(mask == 1)
    grown = whole(mask)
    np.testing.assert_array_equal(grown[mask == 1], interior[mask == 1])


def test_a_block_without_its_halo_is_refused() -> None:
    with pytest.raises(ModelError, match="differ in shape"):
        grow_block(np.zeros((6, 6), np.uint32), np.zeros((4, 4), np.uint8), RULE)


def test_the_card_field_parses_with_a_default_width() -> None:
    assert parse_instances({"interior": 1, "boundary": 2}, 3, "card.json") == InstanceRule(1, 2, 3)


def test_the_card_field_parses_a_minimum_interior_and_writes_it_back() -> None:
    rule = parse_instances({"interior": 1, "boundary": 2, "width": 5, "min_interior": 4}, 3, "card.json")
    assert rule == InstanceRule(1, 2, 5, 4)
    assert rule is not None
    assert parse_instances(rule.to_dict(), 3, "card.json") == rule
    assert "min_interior" not in InstanceRule(1, 2, 5).to_dict()


def test_an_absent_card_field_means_no_rule() -> None:
    assert parse_instances(None, 3, "card.json") is None


@pytest.mark.parametrize(
    ("value", "fault"),
    [
        ([1, 2], "instances must be a mapping"),
        ({"interior": 1, "boundary": 2, "depth": 3}, "unknown instances key 'depth'"),
        ({"interior": 1}, r"instances.boundary must be 1..2, got None"),
        ({"interior": 3, "boundary": 2}, r"instances.interior must be 1..2, got 3"),
        ({"interior": 0, "boundary": 2}, r"instances.interior must be 1..2, got 0"),
        ({"interior": True, "boundary": 2}, r"instances.interior must be 1..2, got True"),
        ({"interior": 2, "boundary": 2}, "instances.interior and instances.boundary are one class"),
        ({"interior": 1, "boundary": 2, "width": 0}, r"instances.width must be an integer >= 1, got 0"),
        ({"interior": 1, "boundary": 2, "min_interior": -1}, r"instances.min_interior must be an integer >= 0, got -1"),
        (
            {"interior": 1, "boundary": 2, "min_interior": 2.5},
            r"instances.min_interior must be an integer >= 0, got 2.5",
        ),
    ],
)
def test_a_bad_card_field_is_one_clear_error(value: object, fault: str) -> None:
    with pytest.raises(ModelError, match=rf"^card.json: invalid model card \({fault}"):
        parse_instances(value, 3, "card.json")
