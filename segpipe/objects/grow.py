"""Instances from a model with a boundary class: interior components grown into the boundary, chunk by chunk.

A model trained on background / interior / boundary separates touching objects by the boundary between them.
Its objects are the connected components of the interior class (``segpipe.objects.components``, ids by first
pixel in raster order); then each boundary pixel joins an adjacent object: ``grow_block`` runs ``width`` steps
of a breadth-first growth restricted to boundary pixels, where at each step an unassigned boundary pixel takes
the smallest id among its already assigned neighbours (4- or 8-connected). So a boundary pixel goes to the
object it is fewest steps from, ties to the smaller id, and stays 0 if none is within ``width`` steps.

With ``min_interior`` > 0 an interior component of fewer pixels is no object (as stardist and cellpose drop
objects below a minimum size): its pixels are grown into like boundary pixels, so a small fragment beside an
object joins it and a lone spot in the background disappears; the kept interiors are renumbered 1.. in the
order of their first pixel. Areas are whole-image sums of per-chunk counts (``chunk_areas``, ``renumbering``),
and each block gets the new ids of the interiors its halo can see (``Renumbering``).

A pixel's result depends only on the interior ids and the mask within ``width`` pixels (each step reaches one
pixel further), so a block read with a ``width``-pixel halo of the final (renumbered) interior ids and of the
mask grows exactly as the whole image does: the grown id image is the same however the image is chunked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from segpipe.errors import ModelError
from segpipe.objects.grid import Block, check_connectivity

DEFAULT_WIDTH = 3


@dataclass(frozen=True)
class InstanceRule:
    """How a model's classes make instances: components of ``interior``, grown up to ``width`` pixels into ``boundary``.

    Attributes:
        interior: The class whose connected components are the objects.
        boundary: The class whose pixels join the adjacent object.
        width: Growth steps into the boundary (the halo the growing pass reads).
        min_interior: Interior components of fewer pixels make no object; their pixels are grown into.
    """

    interior: int
    boundary: int
    width: int = DEFAULT_WIDTH
    min_interior: int = 0

    def to_dict(self) -> dict[str, int]:
        """The card's form: ``{"interior": 1, "boundary": 2, "width": 3}``, and ``min_interior`` when set."""
        form = {"interior": self.interior, "boundary": self.boundary, "width": self.width}
        return {**form, "min_interior": self.min_interior} if self.min_interior else form

    def fold(self, mask: np.ndarray) -> np.ndarray:
        """The mask with boundary pixels counted as interior (the foreground the objects are made of)."""
        return np.where(mask == self.boundary, np.asarray(self.interior, mask.dtype), mask)


def parse_instances(value: Any, num_classes: int, source: str) -> InstanceRule | None:
    """The card's ``instances`` field as a rule, or None when absent.

    Args:
        value: ``None``, or a mapping with integer ``interior`` and ``boundary`` and optional ``width``.
        num_classes: The card's class count (0: not yet known, class values not checked against it).
        source: Names the card in errors.

    Returns:
        The rule, or None.

    Raises:
        ModelError: not a mapping, an unknown key, a value that is not a class of the card, equal classes, or a
            width that is not a positive integer.
    """
    if value is None:
        return None
    if isinstance(value, InstanceRule):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        raise ModelError(f"{source}: invalid model card (instances must be a mapping, got {type(value).__name__})")
    unknown = sorted(set(value) - {"interior", "boundary", "width", "min_interior"})
    if unknown:
        raise ModelError(f"{source}: invalid model card (unknown instances key {unknown[0]!r})")
    for key in ("interior", "boundary"):
        class_value: Any = value.get(key)
        if not _is_int(class_value) or class_value < 1 or (num_classes and class_value >= num_classes):
            classes = f"1..{num_classes - 1}" if num_classes else "a foreground class (>= 1)"
            raise ModelError(f"{source}: invalid model card (instances.{key} must be {classes}, got {class_value!r})")
    if value["interior"] == value["boundary"]:
        raise ModelError(f"{source}: invalid model card (instances.interior and instances.boundary are one class)")
    width = value.get("width", DEFAULT_WIDTH)
    if not _is_int(width) or width < 1:
        raise ModelError(f"{source}: invalid model card (instances.width must be an integer >= 1, got {width!r})")
    least = value.get("min_interior", 0)
    if not _is_int(least) or least < 0:
        fault = f"instances.min_interior must be an integer >= 0, got {least!r}"
        raise ModelError(f"{source}: invalid model card ({fault})")
    return InstanceRule(int(value["interior"]), int(value["boundary"]), int(width), int(least))


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def grow_block(ids: np.ndarray, mask: np.ndarray, rule: InstanceRule, connectivity: int = 4) -> np.ndarray:
    """One block of the grown id image (worker side, pure).

    Args:
        ids: The block of the interior id image with ``rule.width`` pixels of halo on every side
            (``segpipe.objects.table.read_with_halo``; zeros beyond the image), renumbered when the rule has a
            ``min_interior`` (``Renumbering.apply``: 0 on the interiors that make no object).
        mask: The block of the class mask with the same halo.
        rule: The card's instance rule.
        connectivity: Neighbours a growth step reaches: 4 or 8.

    Returns:
        The block's grown ids (without the halo), in ``ids``' dtype.
    """
    structure = check_connectivity(connectivity)
    if ids.shape != mask.shape:
        raise ModelError(f"interior ids {ids.shape} and mask {mask.shape} differ in shape")
    k = rule.width
    grown = np.array(ids, copy=True)
    free = np.isin(np.asarray(mask), (rule.boundary, rule.interior)) & (grown == 0)  # interior: a dropped one
    none = np.iinfo(grown.dtype).max
    offsets = [(dy - 1, dx - 1) for dy in range(3) for dx in range(3) if structure[dy, dx] and (dy, dx) != (1, 1)]
    for _ in range(k):
        if not free.any():
            break
        padded = np.pad(np.where(grown > 0, grown, none), 1, constant_values=none)
        best = np.full(grown.shape, none, grown.dtype)
        h, w = grown.shape
        for dy, dx in offsets:
            np.minimum(best, padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w], out=best)
        take = free & (best != none)
        grown[take] = best[take]
        free &= ~take
    return np.asarray(grown[k : ids.shape[0] - k, k : ids.shape[1] - k])


def grow_ids(ids: np.ndarray, mask: np.ndarray, rule: InstanceRule, connectivity: int = 4) -> np.ndarray:
    """The whole image's grown ids from its interior ids and class mask (the reference for the chunked passes).

    Interior components under ``rule.min_interior`` pixels are dropped and the rest renumbered first.
    """
    if rule.min_interior:
        areas = np.bincount(ids.ravel().astype(np.int64))
        keep = areas >= rule.min_interior
        keep[0] = False
        ids = (np.cumsum(keep) * keep).astype(ids.dtype)[ids]
    k = rule.width
    return grow_block(np.pad(ids, k), np.pad(mask, k), rule, connectivity)


@dataclass(frozen=True)
class Renumbering:
    """New ids of the interior components one block's halo can see: ``old`` sorted, ``new`` (0: no object)."""

    old: np.ndarray
    new: np.ndarray

    def apply(self, ids: np.ndarray) -> np.ndarray:
        """``ids`` with every interior id replaced by its new one (0 stays 0)."""
        where = np.minimum(np.searchsorted(self.old, ids), max(self.old.size - 1, 0))
        known = self.old[where] == ids if self.old.size else np.zeros(ids.shape, bool)
        if not np.all(known | (ids == 0)):
            raise ModelError("an interior id is missing from its block's renumbering")
        return np.where(known & (ids > 0), self.new[where] if self.new.size else 0, 0).astype(ids.dtype)


def chunk_areas(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The interior ids in one block (sorted, no 0) and their pixel counts there (worker side, pure)."""
    found, counts = np.unique(np.asarray(ids), return_counts=True)
    nonzero = found > 0
    return found[nonzero].astype(np.int64), counts[nonzero].astype(np.int64)


def renumbering(
    grid: list[Block], parts: list[tuple[np.ndarray, np.ndarray]], count: int, rule: InstanceRule
) -> dict[tuple[int, int], Renumbering]:
    """Each block's renumbering from every block's ``chunk_areas`` (driver side; memory O(objects)).

    Args:
        grid: The blocks, in the order of ``parts``.
        parts: ``chunk_areas`` of each block of the interior id image.
        count: Interior components in the image (the largest id).
        rule: The rule; components under ``rule.min_interior`` pixels get 0, the rest 1.. in id order.

    Returns:
        Per block index, the new ids of the interiors in the blocks its ``rule.width`` halo reaches.
    """
    areas = np.zeros(count + 1, np.int64)
    for found, counts in parts:
        np.add.at(areas, found, counts)
    keep = areas >= rule.min_interior
    keep[0] = False
    new = np.cumsum(keep) * keep
    ys = sorted({b.origin[0] for b in grid} | {b.origin[0] + b.shape[0] for b in grid})
    xs = sorted({b.origin[1] for b in grid} | {b.origin[1] + b.shape[1] for b in grid})
    at = {b.index: found for b, (found, _) in zip(grid, parts, strict=True)}
    plans = {}
    for b in grid:
        (y, x), (h, w), k = b.origin, b.shape, rule.width
        rows = range(int(np.searchsorted(ys, y - k, "right")) - 1, int(np.searchsorted(ys, y + h + k, "left")))
        cols = range(int(np.searchsorted(xs, x - k, "right")) - 1, int(np.searchsorted(xs, x + w + k, "left")))
        seen = [at[(i, j)] for i in rows for j in cols if (i, j) in at]
        old = np.unique(np.concatenate(seen)) if seen else np.zeros(0, np.int64)
        plans[b.index] = Renumbering(old, new[old].astype(np.int64))
    return plans


def grown_components(mask: Any, rule: InstanceRule, connectivity: int = 4, chunks: Any = None) -> np.ndarray:
    """Objects of a boundary model's mask, serially block by block as the objects stage runs them.

    Args:
        mask: The class mask (2-D, sliceable, with ``.chunks`` unless ``chunks`` is given).
        rule: The card's instance rule.
        connectivity: 4 or 8, for the components and the growth steps.
        chunks: The block shape, when not ``mask.chunks``.

    Returns:
        The grown id image (uint32 or uint64), ids by first kept interior pixel in raster order.
    """
    from segpipe.objects.components import connected_components
    from segpipe.objects.grid import blocks_of, id_dtype
    from segpipe.objects.table import read_with_halo

    def interior_array(count: int, dtype: np.dtype) -> np.ndarray:
        return np.zeros(np.shape(mask), id_dtype(count))

    found = connected_components(mask, interior_array, [rule.interior], connectivity, chunks=chunks)
    grid = blocks_of(mask, chunks)
    plans = renumbering(grid, [chunk_areas(found.ids[b.slices]) for b in grid], found.count, rule)
    grown = np.zeros_like(found.ids)
    for b in grid:
        halo = rule.width
        ids = plans[b.index].apply(read_with_halo(found.ids, b, halo))
        grown[b.slices] = grow_block(ids, read_with_halo(mask, b, halo), rule, connectivity)
    return np.asarray(grown)
