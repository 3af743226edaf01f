"""The chunk grid and the windows read around each chunk. Pure numpy, no I/O.

A chunk is the unit of ownership: one task writes exactly one output chunk. Inside a chunk the model sees
tiles, each grown by a halo of context on every side. Context comes from neighbouring pixels of the image;
only at the image border is it made up, by mirror padding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np


class Region(NamedTuple):
    """A half-open box [y0, y1) x [x0, x1) in image pixels."""

    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def height(self) -> int:
        """Rows, ``y1 - y0``."""
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        """Columns, ``x1 - x0``."""
        return self.x1 - self.x0

    def grow(self, margin: int) -> Region:
        """The box grown by ``margin`` pixels on every side (shrunk for a negative margin)."""
        return Region(self.y0 - margin, self.y1 + margin, self.x0 - margin, self.x1 + margin)

    def shift(self, dy: int, dx: int) -> Region:
        """The box moved by ``dy`` rows and ``dx`` columns."""
        return Region(self.y0 + dy, self.y1 + dy, self.x0 + dx, self.x1 + dx)


def chunk_grid(height: int, width: int, chunk: int) -> list[Region]:
    """Regions of the chunk grid, row-major; edge chunks are cut at the image border."""
    return list(_grid(Region(0, height, 0, width), chunk))


def tiles_in(region: Region, tile: int) -> Iterator[Region]:
    """Tiles of edge ``tile`` covering ``region`` from its top-left corner, edge tiles cut to fit."""
    return _grid(region, tile)


def _grid(region: Region, step: int) -> Iterator[Region]:
    for y in range(region.y0, region.y1, step):
        for x in range(region.x0, region.x1, step):
            yield Region(y, min(y + step, region.y1), x, min(x + step, region.x1))


def clip(region: Region, height: int, width: int) -> Region:
    """The part of ``region`` inside a ``height`` x ``width`` image."""
    return Region(max(region.y0, 0), min(region.y1, height), max(region.x0, 0), min(region.x1, width))


def pad_to_region(data: np.ndarray, have: Region, want: Region, mode: str = "symmetric") -> np.ndarray:
    """Pad ``data`` (covering ``have``, the clipped part of ``want``) out to ``want``.

    ``mode`` is an ``np.pad`` mode; the default ``symmetric`` mirrors and works for any size, including
    1-pixel images.
    """
    pad = (
        (have.y0 - want.y0, want.y1 - have.y1),
        (have.x0 - want.x0, want.x1 - have.x1),
    )
    if not any(p for pair in pad for p in pair):
        return data
    lead = [(0, 0)] * (data.ndim - 2)
    # numpy types ``mode`` as a Literal of its mode names; this function takes any str and lets np.pad refuse it
    padded: np.ndarray = np.pad(data, lead + list(pad), mode=mode)  # type: ignore[call-overload]
    return padded


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value``."""
    return math.ceil(value / multiple) * multiple


def strided_sample(data: np.ndarray, region: Region, stride: int) -> np.ndarray:
    """Pixels of ``data`` (covering ``region``) whose image coordinates are multiples of ``stride``.

    Aligning on image coordinates, not chunk coordinates, makes the sample independent of the chunking.
    """
    oy = (-region.y0) % stride
    ox = (-region.x0) % stride
    return data[..., oy::stride, ox::stride]


def window_origins(region: Region, patch: int, stride: int) -> list[tuple[int, int]]:
    """Origins of the global sliding-window grid (multiples of ``stride``) whose ``patch`` square overlaps ``region``.

    The same windows are found for a chunk as for the whole image, so blending chunk by chunk equals blending the
    whole image.
    """

    def along(start: int, stop: int) -> range:
        first = (start - patch) // stride + 1  # smallest k with k * stride > start - patch
        last = (stop - 1) // stride  # largest k with k * stride <= stop - 1
        return range(first * stride, last * stride + 1, stride)

    return [(y, x) for y in along(region.y0, region.y1) for x in along(region.x0, region.x1)]


def gaussian_weight(patch: int, sigma_scale: float = 0.125) -> np.ndarray:
    """(patch, patch) float32 Gaussian, peak 1, sigma = ``sigma_scale`` * patch (nnU-Net's 1/8).

    The tails are floored at the smallest positive value so every pixel of a window keeps some weight.
    """
    centre = (patch - 1) / 2.0
    axis = np.exp(-0.5 * ((np.arange(patch) - centre) / (sigma_scale * patch)) ** 2)
    weight = np.outer(axis, axis).astype(np.float32)
    weight /= weight.max()
    floored: np.ndarray = np.maximum(weight, weight[weight > 0].min())
    return floored
