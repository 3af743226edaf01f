"""Exact connected components of a chunked 2-D label mask, chunk by chunk.

Three steps, shaped for Dask: ``chunk_borders`` (a pure function of one mask block, run on workers) labels the
block and keeps only what lies on its border; ``merge_borders`` (on the driver) joins border components across
facing rows and columns with a union-find and numbers every component by its first pixel in raster order;
``relabel_chunk`` (again per block, idempotent) writes the final ids. ``connected_components`` runs all three
serially over a zarr array.

Ids are those of a whole-image labelling numbered by first pixel in raster order: ``scipy.ndimage.label(mask
== c)`` for one class, ``skimage.measure.label`` for several (a component holds pixels of one class value), so
the id image does not depend on the chunking. A component's first pixel in its block is its first pixel in the
image (raster order restricted to a block is the block's raster order), hence a component's global rank is
the number of owned components (those whose first pixel lies in their block) in earlier rows, plus those to
the left in its own row: per block the driver needs only a histogram of first-pixel rows and the border
components, never a per-pixel array.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from segpipe.errors import InputError
from segpipe.objects.grid import (
    Block,
    ChunkBorders,
    ChunkRelabel,
    blocks_of,
    check_connectivity,
    id_dtype,
)
from segpipe.objects.merge import merge_borders

UINT32_MAX = (1 << 32) - 1


@dataclass(frozen=True)
class Components:
    """What ``connected_components`` wrote: the component count, the id dtype and the id array."""

    count: int
    dtype: np.dtype
    ids: Any


@dataclass(frozen=True)
class Labelled:
    """One block's local components: ids 1..count (0 background), each one's class and first pixel."""

    labels: np.ndarray
    count: int
    classes: np.ndarray
    first: np.ndarray  # flat index in the block of each component's first pixel; entry 0 unused


def label_block(block: np.ndarray, classes: Sequence[int], connectivity: int = 4, by_class: bool = True) -> Labelled:
    """Local components of one mask block: per class (or of all ``classes`` together when not ``by_class``)."""
    structure = check_connectivity(connectivity)
    block = np.asarray(block)
    if block.ndim != 2:
        raise InputError(f"connected components need a 2-D mask, got shape {block.shape}")
    wide = np.int64 if block.size >= 1 << 31 else np.int32
    groups: list[tuple[int, np.ndarray]] = (
        [(int(c), block == c) for c in classes] if by_class else [(int(classes[0]), np.isin(block, classes))]
    )
    class_of = [np.zeros(1, np.int64)]
    count = 0
    labels = np.zeros(block.shape, wide)
    foreground = np.zeros(block.shape, bool)
    for value, binary in groups:
        local, n = ndimage.label(binary, structure=structure, output=wide)
        if not n:
            continue
        if count:
            labels[binary] = local[binary] + count
        else:
            labels = local  # zero off its class, so the first class's labels are the image's as they are
        foreground |= binary
        class_of.append(np.full(n, value, np.int64))
        count += n
    flat = labels.ravel()
    where = np.flatnonzero(foreground)  # a bool image's nonzero is a sixth of an int32 one's
    first = np.full(count + 1, flat.size, np.int64)
    np.minimum.at(first, flat[where], where)
    return Labelled(labels, count, np.concatenate(class_of), first)


def chunk_borders(
    block: np.ndarray, where: Block, classes: Sequence[int], connectivity: int = 4, by_class: bool = True
) -> ChunkBorders:
    """The border record of one mask block (worker side, pure).

    Args:
        block: The mask block's pixels (2-D integer array).
        where: The block's place in the grid (``segpipe.objects.grid.blocks_of``).
        classes: Foreground class values.
        connectivity: 4 or 8.
        by_class: Components of equal class value (True) or of all ``classes`` as one foreground.

    Returns:
        Lines of local ids on the four borders, the border components and the first-pixel row histogram.
    """
    found = label_block(block, classes, connectivity, by_class)
    labels, width = found.labels, found.labels.shape[1]
    lines = [labels[0], labels[-1], labels[:, 0], labels[:, -1]]
    ids = np.unique(np.concatenate(lines))
    ids = ids[ids > 0]
    order = np.argsort(found.first[1:], kind="stable") + 1  # local ids by first pixel
    rows = found.first[order] // width
    rank = np.arange(order.size) - np.searchsorted(rows, rows)
    rank_of = np.zeros(found.count + 1, np.int64)
    rank_of[order] = rank
    return ChunkBorders(
        block=where,
        count=found.count,
        top=lines[0].astype(np.uint32),
        bottom=lines[1].astype(np.uint32),
        left=lines[2].astype(np.uint32),
        right=lines[3].astype(np.uint32),
        ids=ids.astype(np.int64),
        classes=found.classes[ids],
        first_row=found.first[ids] // width,
        first_col=found.first[ids] % width,
        rank_in_row=rank_of[ids],
        row_counts=np.bincount(rows, minlength=labels.shape[0]).astype(np.int64),
    )


def relabel_chunk(
    block: np.ndarray,
    plan: ChunkRelabel,
    classes: Sequence[int],
    connectivity: int = 4,
    by_class: bool = True,
    dtype: Any = np.uint32,
) -> np.ndarray:
    """One block of the final id image (worker side, pure and idempotent).

    Args:
        block: The same mask block ``chunk_borders`` saw.
        plan: The block's entry of ``merge_borders``' plan.
        classes: As for ``chunk_borders``.
        connectivity: As for ``chunk_borders``.
        by_class: As for ``chunk_borders``.
        dtype: The plan's id dtype.

    Returns:
        The block's ids (0 background) in ``dtype``.
    """
    found = label_block(block, classes, connectivity, by_class)
    width = found.labels.shape[1]
    owned = np.ones(found.count + 1, bool)
    owned[plan.ids[~plan.owned]] = False
    order = np.argsort(found.first[1:], kind="stable") + 1
    order = order[owned[order]]
    rows = found.first[order] // width
    rank = np.arange(order.size) - np.searchsorted(rows, rows)
    final = np.zeros(found.count + 1, np.uint64)
    final[order] = (plan.row_base[rows] + rank).astype(np.uint64)
    final[plan.ids] = plan.global_ids.astype(np.uint64)
    return np.asarray(final.astype(dtype)[found.labels])


def connected_components(
    mask: Any,
    out: Any,
    classes: Sequence[int],
    connectivity: int = 4,
    by_class: bool = True,
    chunks: tuple[int, int] | None = None,
) -> Components:
    """Label ``mask`` block by block into ``out`` (both 2-D, sliceable; ``out`` made by ``create_id_array``).

    Args:
        mask: The label mask (zarr array or any array with ``.chunks`` and slicing).
        out: Where the ids go; a callable ``out(count, dtype)`` is called once the count is known and must
            return the array to write.
        classes: Foreground class values.
        connectivity: 4 or 8.
        by_class: Components of equal class value, or of all ``classes`` together.
        chunks: The block shape, when not ``mask.chunks``.

    Returns:
        The component count, the id dtype and the array written.
    """
    check_connectivity(connectivity)
    grid = blocks_of(mask, chunks)
    records = [chunk_borders(mask[b.slices], b, classes, connectivity, by_class) for b in grid]
    plan = merge_borders(records, connectivity)
    target = out(plan.count, plan.dtype) if callable(out) else out
    for b in grid:
        target[b.slices] = relabel_chunk(
            mask[b.slices], plan.chunks[b.index], classes, connectivity, by_class, target.dtype
        )
    return Components(plan.count, plan.dtype, target)


def create_id_array(store: Any, shape: tuple[int, ...], chunks: tuple[int, ...], count: int, **kwargs: Any) -> Any:
    """A zarr v3 array for the id image, uint32 or uint64 by ``count``, background 0."""
    import zarr

    return zarr.create_array(store, shape=shape, chunks=chunks, dtype=id_dtype(count), fill_value=0, **kwargs)
