"""Reading overlapping windows from a chunked array without decoding (or fetching) a chunk once per window.

An infer task reads each output chunk grown by its halo: a window that touches 9 stored chunks for a 28-pixel
halo, 6 of them shared with the window before it. ``BlockCache`` fetches whole stored chunks, keeps the recently
used ones decoded (as many as one window touches: what a plain read decodes at once anyway), and cuts every
window out of them: along a row of chunks each stored chunk is fetched once instead of up to 9 times.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from typing import Any

import numpy as np


class BlockCache:
    """``cache[index]`` equals ``array[index]``, read through a least-recently-used cache of whole stored chunks.

    An index holds ints and step-1 slices, one per axis. For one reader thread (an infer task's).
    """

    def __init__(self, array: Any) -> None:
        """Wrap ``array`` (anything with ``shape``, ``chunks``, ``dtype`` and numpy-style indexing); nothing is read."""
        self.array = array
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.chunks: tuple[int, ...] = tuple(array.chunks)
        self.dtype = np.dtype(array.dtype)
        self.capacity = 0  # blocks kept: the most one window has touched (enough for a walk along a row)
        self.blocks: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self.fetched = 0  # stored chunks fetched, for tests and benchmarks

    def __getitem__(self, index: tuple[int | slice, ...]) -> np.ndarray:
        """The pixels at ``index``, cut from the cached chunks it touches (fetching those not cached)."""
        bounds = [_bounds(item, size) for item, size in zip(index, self.shape, strict=True)]
        out = np.empty([stop - start for start, stop in bounds], self.dtype)
        ranges = [
            range(start // step, -(-stop // step)) for (start, stop), step in zip(bounds, self.chunks, strict=True)
        ]
        touched = math.prod(len(r) for r in ranges)
        self.capacity = max(self.capacity, touched)
        for key in itertools.product(*ranges):
            block = self._block(key)
            source, target = [], []
            for axis, k in enumerate(key):
                first = k * self.chunks[axis]
                start, stop = max(bounds[axis][0], first), min(bounds[axis][1], first + block.shape[axis])
                source.append(slice(start - first, stop - first))
                target.append(slice(start - bounds[axis][0], stop - bounds[axis][0]))
            out[tuple(target)] = block[tuple(source)]
        squeezed = tuple(axis for axis, item in enumerate(index) if isinstance(item, (int, np.integer)))
        return out.squeeze(axis=squeezed) if squeezed else out

    def _block(self, key: tuple[int, ...]) -> np.ndarray:
        if key in self.blocks:
            self.blocks.move_to_end(key)
            return self.blocks[key]
        region = tuple(
            slice(k * step, min((k + 1) * step, size))
            for k, step, size in zip(key, self.chunks, self.shape, strict=True)
        )
        block = np.asarray(self.array[region])
        self.fetched += 1
        self.blocks[key] = block
        while len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)
        return block


def _bounds(item: int | slice, size: int) -> tuple[int, int]:
    """[start, stop) of one axis's index item (an int or a step-1 slice) on an axis of ``size``."""
    if isinstance(item, slice):
        start, stop, step = item.indices(size)
        if step != 1:
            raise ValueError("BlockCache reads step-1 slices only")
        return start, max(start, stop)
    position = int(item) + (size if item < 0 else 0)
    if not 0 <= position < size:
        raise IndexError(f"index {item} is out of bounds for an axis of size {size}")
    return position, position + 1


def cached_blocks(array: Any) -> Any:
    """``array`` read through a ``BlockCache`` when it is chunked (has ``chunks``), else ``array`` itself."""
    chunks = getattr(array, "chunks", None)
    if chunks is None or len(chunks) != len(getattr(array, "shape", ())):
        return array
    return BlockCache(array)
