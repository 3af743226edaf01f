"""What of an input the model reads: its bands, the stored level, the resampling left, and the chunks worth computing.

Planned once per image (``plan_view``): the bands (``--bands`` or the card's) are picked, the level is chosen for the
model's pixel size (``--level`` by hand, ``--pixel-size`` setting the image's), and the foreground (``--foreground``)
is found on a low-resolution look and turned into the set of output chunks to compute. Ingest then copies the chosen
level, resampled onto the model's grid, as the store's level 0; every later stage works on that grid.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from segpipe.errors import ConfigError
from segpipe.io.bands import select_bands
from segpipe.io.foreground import Foreground, ForegroundIndex, background_tiles, choose_foreground, foreground_chunks
from segpipe.io.images import ImageSource
from segpipe.io.levels import ImageLevels, level_source, read_levels
from segpipe.io.resample import resampled_shape
from segpipe.io.resolution import DEFAULT_RTOL, choose_level
from segpipe.tiling import Region, chunk_grid, clip, tiles_in
from segpipe.units import PixelSize, parse_pixel_size

NGFF_UNITS = {
    "nm": "nanometer",
    "um": "micrometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "km": "kilometer",
    "deg": "degree",
}


@dataclass(frozen=True)
class InputView:
    """How the model's grid is read from an input.

    Attributes:
        reader: the stored level read (with the picked bands); None: the job's image itself.
        level: the index of that level.
        factor: level pixels per grid pixel (y, x); (1, 1) reads the level as stored.
        scale: level-0 pixels per grid pixel (y, x).
        pixel_size: the grid's pixel size, when the image (or ``--pixel-size``) declares one.
        set_size: whether ``--pixel-size`` set the image's pixel size.
        chunks: the grid chunks to compute (foreground within a halo); None: every chunk.
        foreground_fraction: the share of the image that is foreground; None without ``--foreground``.
    """

    reader: ImageSource | None = None
    level: int = 0
    factor: tuple[float, float] = (1.0, 1.0)
    scale: tuple[float, float] = (1.0, 1.0)
    pixel_size: PixelSize | None = None
    set_size: bool = False
    chunks: frozenset[Region] | None = None
    foreground_fraction: float | None = None
    foreground_scale: tuple[float, float] = (1.0, 1.0)
    foreground_mask: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def resized(self) -> bool:
        """Whether the grid is not the input's level 0 as stored."""
        return self.level != 0 or self.factor != (1.0, 1.0)

    def source(self, image: ImageSource) -> ImageSource:
        """The ImageSource the grid is read from: ``reader`` (for ``image``'s plane), else ``image``."""
        return image if self.reader is None else replace(self.reader, plane=image.plane)

    def grid(self, image: ImageSource) -> tuple[int, int, int]:
        """(C, rows, columns) of the model's grid over ``image``."""
        reader = self.source(image)
        rows, cols = resampled_shape(reader.height, reader.width, self.factor)
        return reader.channels, rows, cols

    def grid_dtype(self, image: ImageSource) -> str:
        """The grid's pixel type: the image's, or float (float64 pixels stay float64) when resampled."""
        dtype = np.dtype(image.dtype)
        if self.factor == (1.0, 1.0):
            return dtype.str
        return np.dtype(np.float64 if dtype == np.float64 else np.float32).str

    def ngff_pixel_size(self, stored: list[float], unit: str | None) -> tuple[list[float], str | None]:
        """The grid's (y, x) pixel size and NGFF unit, from the metadata's level-0 ``stored`` size and ``unit``."""
        if self.pixel_size is not None and (self.resized or self.set_size):
            size = self.pixel_size
            return [size.y, size.x], NGFF_UNITS.get(size.unit, size.unit)
        return [stored[0] * self.scale[0], stored[1] * self.scale[1]], unit

    def sample_mask(self, region: Region, stride: int) -> np.ndarray | None:
        """Foreground at the strided sample positions of grid ``region`` (as ``strided_sample`` picks them)."""
        if self.foreground_mask is None:
            return None
        mask = self.foreground_mask
        ys = np.arange(region.y0 + (-region.y0) % stride, region.y1, stride)
        xs = np.arange(region.x0 + (-region.x0) % stride, region.x1, stride)
        my = np.minimum(((ys + 0.5) * self.scale[0] / self.foreground_scale[0]).astype(np.int64), mask.shape[0] - 1)
        mx = np.minimum(((xs + 0.5) * self.scale[1] / self.foreground_scale[1]).astype(np.int64), mask.shape[1] - 1)
        return np.asarray(mask[np.ix_(my, mx)])


def plan_view(
    stack: ImageSource,
    bands: tuple[int, ...] | None,
    level: int | None,
    size: str | None,
    model_size: PixelSize | None,
    tolerance: float | None = None,
) -> tuple[ImageSource, InputView, ImageLevels | None]:
    """The band-picked level-0 source of ``stack`` and the view of it the model reads (no foreground yet).

    Reads headers only; with no level, pixel size or model resolution asked for, no levels are read.

    Raises:
        ConfigError: a band out of range or given twice, a level that does not exist, a pixel size that is not
            positive or does not convert, a model resolution on an image that declares none.
    """
    picked = select_bands(stack, bands)
    if level is None and size is None and model_size is None:
        return picked, InputView(), None
    levels = read_levels(stack)
    if size is not None:
        levels = levels.with_pixel_size(parse_pixel_size(size, what=f"{stack.path}: --pixel-size"))
    choice = choose_level(levels, model_size, DEFAULT_RTOL if tolerance is None else tolerance, level)
    index = choice.level.index
    reader = select_bands(_level_reader(stack, levels, index), bands)
    scale = (choice.level.downsample[0] * choice.factor[0], choice.level.downsample[1] * choice.factor[1])
    view = InputView(reader, index, choice.factor, scale, choice.pixel_size, size is not None)
    return picked, view, levels


def _level_reader(stack: ImageSource, levels: ImageLevels, index: int) -> ImageSource:
    reader = level_source(stack, levels, index)
    if index and reader.kind == "zarr" and reader.channels != stack.channels:
        raise ConfigError(f"{reader.path}: level {index} has {reader.channels} bands, level 0 {stack.channels}")
    return reader


def with_foreground(
    view: InputView,
    spec: str,
    stack: ImageSource,
    levels: ImageLevels | None,
    grid: tuple[int, int],
    chunk: int,
    context: int,
) -> InputView:
    """``view`` with the chunks of the ``grid`` that ``--foreground spec`` keeps (within ``context`` pixels)."""
    if spec == "none":
        return view
    found: Foreground | None = choose_foreground(spec, stack, levels or read_levels(stack))
    if found is None:
        return view
    chunks = foreground_chunks(found, grid, view.scale, chunk, context)
    return replace(
        view,
        chunks=chunks,
        foreground_fraction=found.fraction,
        foreground_scale=found.scale,
        foreground_mask=found.mask,
    )


def background_tiles_of(view: InputView, stitch: str, tile: int, halo: int) -> dict[Region, frozenset[Region]]:
    """Per computed chunk, its tiles with no foreground within ``halo`` (``trim`` stitching with a foreground only).

    Every pixel such a tile's model input holds is outside the foreground, so it is written as background without
    being computed; the tiles with foreground are computed exactly as in a whole run.
    """
    if view.chunks is None or view.foreground_mask is None or stitch != "trim":
        return {}
    index = ForegroundIndex(view.foreground_mask, view.foreground_scale, view.scale)
    return background_tiles(index, sorted(view.chunks), tile, halo)


def copied_parts(
    view: InputView,
    grid: tuple[int, int],
    chunk: int,
    context: int,
    background: Mapping[Region, frozenset[Region]] | None = None,
    tile: int = 0,
) -> dict[Region, Region] | None:
    """The grid chunks ingest copies, each with the part of it copied; None: every chunk, whole.

    A part is the bounding box, inside its chunk, of what the computed chunks read: each chunk grown by
    ``context``, or, for a chunk with ``background`` tiles (of edge ``tile``), each of its computed tiles grown
    by ``context``.
    """
    if view.chunks is None:
        return None
    background = background or {}
    needed: list[Region] = []
    for region in view.chunks:
        skipped = background.get(region)
        if not skipped:
            needed.append(region.grow(context))
            continue
        tiles = tiles_in(Region(0, region.height, 0, region.width), tile)
        needed += [t.shift(region.y0, region.x0).grow(context) for t in tiles if t not in skipped]
    parts: dict[tuple[int, int], Region] = {}
    for want in needed:
        have = clip(want, *grid)
        for y in range(have.y0 // chunk * chunk, have.y1, chunk):
            for x in range(have.x0 // chunk * chunk, have.x1, chunk):
                inside = Region(max(y, have.y0), min(y + chunk, have.y1), max(x, have.x0), min(x + chunk, have.x1))
                box = parts.get((y, x), inside)
                parts[(y, x)] = Region(
                    min(box.y0, inside.y0), max(box.y1, inside.y1), min(box.x0, inside.x0), max(box.x1, inside.x1)
                )
    return {r: parts[(r.y0, r.x0)] for r in chunk_grid(grid[0], grid[1], chunk) if (r.y0, r.x0) in parts}


def copied_chunks(view: InputView, grid: tuple[int, int], chunk: int, context: int) -> frozenset[Region] | None:
    """The grid chunks ingest copies: those computed and those their ``context`` reaches; None: every chunk."""
    parts = copied_parts(view, grid, chunk, context)
    return None if parts is None else frozenset(parts)


__all__ = ["InputView", "background_tiles_of", "copied_chunks", "copied_parts", "plan_view", "with_foreground"]
