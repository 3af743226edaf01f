"""The block grid of a chunked 2-D array, and the records passed between workers and the driver.

The records carry what labelling components needs (``segpipe.objects.components``, ``segpipe.objects.merge``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from segpipe.errors import ConfigError, InputError

UINT32_MAX = (1 << 32) - 1


@dataclass(frozen=True)
class Block:
    """One block of the grid: its (row, column) index, origin and shape in pixels."""

    index: tuple[int, int]
    origin: tuple[int, int]
    shape: tuple[int, int]

    @property
    def slices(self) -> tuple[slice, slice]:
        """The block's pixels in the whole array."""
        (y, x), (h, w) = self.origin, self.shape
        return slice(y, y + h), slice(x, x + w)


def _edges(size: int, chunk: Any) -> list[int]:
    """Block boundaries along one axis: from a regular chunk length or a tuple of chunk lengths (as dask)."""
    if isinstance(chunk, int | np.integer):
        if chunk < 1:
            raise ConfigError(f"chunk length must be >= 1, got {chunk}")
        return list(range(0, size, int(chunk))) + [size]
    lengths = [int(c) for c in chunk]
    if sum(lengths) != size or min(lengths, default=1) < 1:
        raise ConfigError(f"chunk lengths {lengths} do not tile an axis of {size}")
    return list(np.cumsum([0, *lengths]))


def blocks_of(array: Any, chunks: Any = None) -> list[Block]:
    """The blocks of a 2-D array, in raster order, from ``chunks`` or else the array's own ``.chunks``.

    Args:
        array: Anything with ``.shape``, ``.ndim`` and ``.dtype`` (zarr, dask, numpy).
        chunks: (rows, cols) chunk lengths, or per-axis tuples of lengths; default ``array.chunks``.

    Returns:
        Every block, row by row.
    """
    shape = tuple(array.shape)
    if len(shape) != 2:
        raise InputError(f"objects need a 2-D mask, got shape {shape}")
    if np.dtype(array.dtype).kind not in "uib":
        raise InputError(f"a label mask must hold integers, found {array.dtype}")
    chunks = getattr(array, "chunks", None) if chunks is None else chunks
    if chunks is None:
        raise ConfigError("the mask has no .chunks; pass chunks=(rows, cols)")
    ys, xs = _edges(shape[0], chunks[0]), _edges(shape[1], chunks[1])
    return [
        Block((i, j), (ys[i], xs[j]), (ys[i + 1] - ys[i], xs[j + 1] - xs[j]))
        for i in range(len(ys) - 1)
        for j in range(len(xs) - 1)
    ]


def check_connectivity(connectivity: int) -> np.ndarray:
    """The scipy structuring element for 4- or 8-connectivity; ConfigError otherwise."""
    if connectivity not in (4, 8):
        raise ConfigError(f"connectivity must be 4 or 8, got {connectivity!r}")
    return np.asarray(ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2))


def id_dtype(count: int) -> np.dtype:
    """uint32 for ids up to 2**32 - 1, uint64 beyond."""
    return np.dtype(np.uint32 if count <= UINT32_MAX else np.uint64)


@dataclass(frozen=True)
class ChunkBorders:
    """What the driver needs of one block: its border lines of local ids, and its border components.

    Attributes:
        block: The block's place in the grid.
        count: Local components in the block.
        top, bottom, left, right: Local ids along the block's first/last row and first/last column.
        ids: Sorted local ids of the components on any border line.
        classes: Class value of each of ``ids``.
        first_row, first_col: Block coordinates of each of ``ids``' first pixel.
        rank_in_row: How many local components have their first pixel in that row, left of it.
        row_counts: Local components per row of their first pixel (length = block height).
    """

    block: Block
    count: int
    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray
    ids: np.ndarray
    classes: np.ndarray
    first_row: np.ndarray
    first_col: np.ndarray
    rank_in_row: np.ndarray
    row_counts: np.ndarray

    @property
    def size(self) -> int:
        """Entries held: O(border length), whatever the block's content."""
        arrays = (self.top, self.bottom, self.left, self.right, self.ids, self.classes)
        return sum(a.size for a in arrays) + 3 * self.ids.size + self.row_counts.size


@dataclass(frozen=True)
class ChunkRelabel:
    """The driver's instructions for one block's relabel pass (O(border length)).

    Attributes:
        row_base: Global id of the first owned component whose first pixel lies in each block row.
        ids: Local ids of the block's border components, sorted.
        global_ids: Final id of each of ``ids``.
        owned: Whether each of ``ids`` has its component's first pixel in this block.
    """

    row_base: np.ndarray
    ids: np.ndarray
    global_ids: np.ndarray
    owned: np.ndarray


@dataclass(frozen=True)
class ComponentPlan:
    """The merge result: the total component count, the id dtype and each block's relabel instructions."""

    count: int
    dtype: np.dtype
    chunks: dict[tuple[int, int], ChunkRelabel]
