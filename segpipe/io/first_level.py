"""Level 1 of the image's and the mask's pyramids, written by the infer tasks from the chunks they hold.

Level 1's chunk (i, j) halves a block of 2 x 2 level-0 chunks. The infer tasks take the chunks block by block
(``block_major``); a task that holds every chunk of a block writes that level-1 chunk of the image (2 x 2 means of
the pixels it read for the model) and of the mask (every other label) once the block's last chunk is written, then
marks it in the ``level1`` ledger. Finalize computes from level 0 only the level-1 chunks not marked: a block split
between two tasks, or one a resumed run did not compute whole. The bytes are the same either way
(``omezarr.halved`` of a chunk is its part of the whole level's reduction, for an even chunk edge).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import zarr

from segpipe.io.ledger import ChunkLedger
from segpipe.io.omezarr import create_level, halved, level_count
from segpipe.storage import OWN_FORMAT, location, open_array
from segpipe.storage.lease import LeaseFence
from segpipe.tiling import Region

STAGE = "level1"  # the ledger of the level-1 chunks written by infer tasks

Block = tuple[int, int]  # (row, column) of a level-1 chunk


@dataclass(frozen=True)
class FirstLevel:
    """Where level 1 of an image and its mask go, their chunk edge and their ledger; small and picklable."""

    image: str
    mask: str
    chunk: int
    ledger: ChunkLedger

    @classmethod
    def of_store(
        cls, store: str, shape: tuple[int, int], chunk: int, key: str, fence: LeaseFence | None = None
    ) -> FirstLevel | None:
        """Level 1 of the OME-Zarr ``store`` of a (rows, columns) ``shape`` image, under fingerprint ``key``.

        None where the pyramid has no level 1 (a small image) or a 2 x 2 pixel block can straddle two chunks (an odd
        ``chunk``): finalize then builds the whole level.
        """
        if chunk % 2 or level_count(*shape) < 2:
            return None
        root = location(store)
        ledger = ChunkLedger(root, STAGE, key, fence)
        return cls(root.child("1").url, root.child("labels", "mask", "1").url, chunk, ledger)

    def exists(self) -> bool:
        """Whether both level-1 arrays have been created."""
        return all(location(url).child("zarr.json").exists() for url in (self.image, self.mask))

    def create(self, image0: str, mask0: str) -> None:
        """Create both level-1 arrays empty (over what was there) from their level 0 at ``image0``, ``mask0``.

        Every level-1 chunk marked before is forgotten.
        """
        self.ledger.reset()
        for source, target in ((image0, self.image), (mask0, self.mask)):
            create_level(open_array(source, mode="r", zarr_format=OWN_FORMAT), target, self.chunk)

    def written(self) -> frozenset[tuple[int, int]] | None:
        """Origins of the level-1 chunks the infer tasks wrote; None when the arrays are not there."""
        return frozenset(self.ledger.done_regions()) if self.exists() else None

    def block_of(self, region: Region) -> Block:
        """The level-1 chunk that level-0 chunk ``region`` is part of."""
        return region.y0 // (2 * self.chunk), region.x0 // (2 * self.chunk)

    def writer(self, regions: Sequence[Region], height: int, width: int) -> FirstLevelWriter:
        """The writer of one task's level-1 chunks, for its level-0 ``regions`` of a (height, width) level 0."""
        return FirstLevelWriter(self, held_blocks(self, regions, height, width), height, width)


def block_major(regions: list[Region], chunk: int) -> list[Region]:
    """``regions`` ordered block by block (2 x 2 chunks; blocks row-major, chunks row-major in each)."""
    return sorted(regions, key=lambda r: (r.y0 // (2 * chunk), r.x0 // (2 * chunk), r.y0, r.x0))


def block_chunks(block: Block, chunk: int, height: int, width: int) -> frozenset[tuple[int, int]]:
    """Origins of the level-0 chunks of ``block`` inside a (height, width) level 0."""
    ys = [y for y in (2 * block[0] * chunk, (2 * block[0] + 1) * chunk) if y < height]
    xs = [x for x in (2 * block[1] * chunk, (2 * block[1] + 1) * chunk) if x < width]
    return frozenset((y, x) for y in ys for x in xs)


def held_blocks(
    level: FirstLevel, regions: Sequence[Region], height: int, width: int
) -> dict[Block, frozenset[tuple[int, int]]]:
    """The blocks every chunk of which is in ``regions``, each with its chunks' origins."""
    have = {(r.y0, r.x0) for r in regions}
    blocks = {level.block_of(r) for r in regions}
    chunks = {block: block_chunks(block, level.chunk, height, width) for block in blocks}
    return {block: inside for block, inside in chunks.items() if inside <= have}


class FirstLevelWriter:
    """Collects one task's halved chunks, block by block, and writes each block's level-1 chunk once it is whole.

    For the task's writer thread: ``add`` each chunk after its level-0 write; chunks of blocks the task does not
    hold whole are let go.
    """

    def __init__(self, level: FirstLevel, held: dict[Block, frozenset[tuple[int, int]]], height: int, width: int):
        """Nothing is opened until a block is whole."""
        self.level = level
        self.held = held
        self.shape = (-(-height // 2), -(-width // 2))
        self.pieces: dict[Block, dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]] = {}
        self.arrays: tuple[zarr.Array[Any], zarr.Array[Any]] | None = None

    def add(self, region: Region, halved_pixels: np.ndarray, labels: np.ndarray) -> None:
        """Chunk ``region`` written: its pixels as level 0 holds them, already ``halved``, and its (h, w) labels."""
        block = self.level.block_of(region)
        if block not in self.held:
            return
        pieces = self.pieces.setdefault(block, {})
        pieces[(region.y0, region.x0)] = (halved_pixels, halved(labels, labels=True))
        if pieces.keys() == self.held[block]:
            self._write(block, self.pieces.pop(block))

    def _write(self, block: Block, pieces: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]) -> None:
        chunk = self.level.chunk
        y0, x0 = block[0] * chunk, block[1] * chunk
        target = Region(y0, min(y0 + chunk, self.shape[0]), x0, min(x0 + chunk, self.shape[1]))
        first = next(iter(pieces.values()))
        image = np.zeros((first[0].shape[0], target.height, target.width), first[0].dtype)
        mask = np.zeros((target.height, target.width), first[1].dtype)
        for (cy, cx), (pixels, labels) in pieces.items():
            top, left = cy // 2 - y0, cx // 2 - x0
            image[:, top : top + pixels.shape[1], left : left + pixels.shape[2]] = pixels
            mask[top : top + labels.shape[0], left : left + labels.shape[1]] = labels
        image_array, mask_array = self._opened()
        self.level.ledger.check_fence()
        image_array[:, target.y0 : target.y1, target.x0 : target.x1] = image
        mask_array[target.y0 : target.y1, target.x0 : target.x1] = mask
        self.level.ledger.mark_done(target)

    def _opened(self) -> tuple[zarr.Array[Any], zarr.Array[Any]]:
        """Level 1 of the image and of the mask, opened for writing on first use."""
        if self.arrays is None:
            image = open_array(self.level.image, mode="r+", zarr_format=OWN_FORMAT)
            self.arrays = image, open_array(self.level.mask, mode="r+", zarr_format=OWN_FORMAT)
        return self.arrays
