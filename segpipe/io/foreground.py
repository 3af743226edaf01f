"""Which pixels are worth computing: a low-resolution foreground mask and the output chunks it touches.

A foreground is found on a small look at the image (the finest stored level with both sides at most
``LOOK_SIDE``, block-averaged further when even the coarsest level is larger), never on full-resolution pixels:

* ``tissue``: brightfield tissue, as TIAToolbox's and histolab's maskers find it: Otsu's threshold on the HSV
  saturation (or the optical density) of the look, then a morphological clean-up (closing, opening, small
  objects removed, holes filled);
* ``nodata``: pixels that are not the GeoTIFF's GDAL_NODATA value in every band, not NaN in every band, and not
  transparent in the alpha band;
* a mask image (``MASK``) at any resolution of the same aspect ratio: non-zero means compute.

``foreground_chunks`` then names the output chunks with foreground within a halo; the others need not be read.
``background_tiles`` names, inside those chunks, the model's tiles with no foreground within a halo; they need
not be computed either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import tifffile
from scipy import ndimage

from segpipe.errors import ConfigError, InputError
from segpipe.io.images import ImageSource, open_image
from segpipe.io.levels import ImageLevels, Level, level_source
from segpipe.io.resample import resample_region
from segpipe.storage import location
from segpipe.tiling import Region, chunk_grid, tiles_in

LOOK_SIDE = 1024  # longest side of the look a foreground is found on (about 1.25x-2.5x objective power on a slide)
LOOK_BAND_ROWS = 256  # look rows made per read, so a large level is read a band at a time
ASPECT_RTOL = 0.02  # a mask's scale may differ this much between its axes (rounding of its size)
SATURATION_BOUNDS = (0.05, 0.2)  # Otsu's threshold kept within these, so all-glass or all-tissue is not split
DENSITY_BOUNDS = (0.05, 0.3)
CLEANUP_RADIUS = 2  # look pixels
MIN_OBJECT = 64  # look pixels: smaller specks (dust, debris) are not tissue
GDAL_NODATA, EXTRA_SAMPLES = 42113, 338
FOREGROUNDS = ("auto", "none", "nodata", "tissue")


@dataclass(frozen=True)
class Foreground:
    """A low-resolution foreground mask (True: compute) and its scale.

    Attributes:
        mask: (h, w) booleans.
        scale: level-0 pixels per mask pixel, (y, x).
        kind: ``tissue``, ``nodata`` or ``mask``.
    """

    mask: np.ndarray
    scale: tuple[float, float]
    kind: str

    @property
    def fraction(self) -> float:
        """The share of the image that is foreground."""
        return float(self.mask.mean()) if self.mask.size else 0.0


@dataclass(frozen=True)
class Nodata:
    """What a file declares as no data: a value (GDAL_NODATA, may be NaN) and an alpha band (0-based)."""

    value: float | None = None
    alpha_band: int | None = None

    @property
    def declared(self) -> bool:
        """Whether the file declares any nodata."""
        return self.value is not None or self.alpha_band is not None


def read_nodata(source: ImageSource) -> Nodata:
    """The nodata a TIFF declares (a Zarr declares none); float images may still hold NaN."""
    if source.kind != "tiff":
        return Nodata()
    where = location(source.path)
    with where.open("rb") as handle, tifffile.TiffFile(handle, name=where.name) as tif:
        tags = tif.pages.first.tags
        text, extra = tags.valueof(GDAL_NODATA), tags.valueof(EXTRA_SAMPLES)
    value = None
    if text is not None:
        try:
            value = float(str(text).strip().strip("\x00"))
        except ValueError:
            raise InputError(f"{source.path}: GDAL_NODATA {text!r} is not a number") from None
    extras = list(extra) if isinstance(extra, tuple | list) else ([] if extra is None else [extra])
    alpha = next((i for i, kind in enumerate(extras) if int(kind) in (1, 2)), None)
    band = None if alpha is None else source.channels - len(extras) + alpha
    return Nodata(value, band)


def valid_pixels(data: np.ndarray, nodata: Nodata) -> np.ndarray:
    """(h, w) booleans of (C, h, w) ``data``: True where a pixel holds data in at least one band."""
    bands = [b for b in range(data.shape[0]) if b != nodata.alpha_band] or [0]
    values = data[bands]
    empty = np.ones(data.shape[1:], dtype=bool)
    if nodata.value is not None:
        missing = np.isnan(values) if math.isnan(nodata.value) else values == nodata.value
        empty &= missing.all(axis=0)
    elif values.dtype.kind == "f":
        empty &= np.isnan(values).all(axis=0)
    else:
        empty[:] = False
    if nodata.alpha_band is not None:
        empty |= data[nodata.alpha_band] == 0
    return ~empty


def tissue_mask(rgb: np.ndarray, method: str = "saturation") -> np.ndarray:
    """(h, w) booleans: tissue in a brightfield (C >= 3, C, h, w) look, glass False.

    Args:
        rgb: red, green and blue first; integer pixels are scaled by their type's maximum, floats taken as 0..1.
        method: ``saturation`` (HSV) or ``density`` (mean optical density).

    Raises:
        ConfigError: fewer than three bands, or an unknown method.
    """
    if rgb.shape[0] < 3:
        raise ConfigError(f"tissue detection needs red, green and blue bands; the image has {rgb.shape[0]}")
    if method == "saturation":
        value, bounds = saturation(rgb[:3]), SATURATION_BOUNDS
    elif method == "density":
        value, bounds = optical_density(rgb[:3]), DENSITY_BOUNDS
    else:
        raise ConfigError(f"tissue method {method!r}: use saturation or density")
    spread = float(value.max() - value.min()) if value.size else 0.0
    threshold = otsu_threshold(value) if spread > 1e-6 else bounds[0]
    return clean_mask(value > min(max(threshold, bounds[0]), bounds[1]))


def _unit_scale(dtype: np.dtype) -> float:
    """What a pixel of ``dtype`` is divided by to fall in 0..1: an integer type's maximum, 1 for floats."""
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def saturation(rgb: np.ndarray) -> np.ndarray:
    """(h, w) float32 HSV saturation of (3, h, w) ``rgb`` (scaled as ``tissue_mask`` says, clipped to 0..1).

    Only the (h, w) band maximum and minimum are made as floats (clipping commutes with both), never a float copy
    of the three bands.
    """
    scale = _unit_scale(rgb.dtype)
    brightest = np.clip(rgb.max(axis=0).astype(np.float32) / scale, 0.0, 1.0)
    darkest = np.clip(rgb.min(axis=0).astype(np.float32) / scale, 0.0, 1.0)
    spread = np.subtract(brightest, darkest, out=darkest)
    safe = np.maximum(brightest, np.float32(1e-12))
    return np.where(brightest > 0, spread / safe, np.float32(0.0)).astype(np.float32)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """(h, w) float32 mean optical density of (3, h, w) ``rgb`` (scaled as ``tissue_mask`` says), band by band."""
    scale, total = _unit_scale(rgb.dtype), np.zeros(rgb.shape[1:], np.float32)
    for band in rgb:
        colour = np.clip(band.astype(np.float32) / scale, np.float32(1 / 255), np.float32(1.0))
        total -= np.log10(colour)
    return total / np.float32(rgb.shape[0])


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values``: the histogram bin centre (``bins`` over their range) that best splits them.

    As ``skimage.filters.threshold_otsu``: the centre maximising the between-class variance of the pixels at or
    below it against those above.
    """
    counts, edges = np.histogram(values.ravel(), bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    counts = counts.astype(np.float64)
    below, above = np.cumsum(counts), np.cumsum(counts[::-1])[::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_below = np.cumsum(counts * centres) / below
        mean_above = (np.cumsum((counts * centres)[::-1]) / above[::-1])[::-1]
    variance = below[:-1] * above[1:] * (mean_below[:-1] - mean_above[1:]) ** 2
    return float(centres[int(np.nanargmax(variance))])


def clean_mask(mask: np.ndarray, radius: int = CLEANUP_RADIUS, min_object: int = MIN_OBJECT) -> np.ndarray:
    """A binary mask closed, opened, rid of objects up to ``min_object`` pixels, and with its holes filled.

    Closing and opening use a disc of ``radius``, the mask extended by its edge pixels (so tissue touching the
    border is not eroded); objects are 4-connected.
    """
    footprint = disc(radius)
    padded = np.pad(mask, 2 * radius, mode="edge")
    closed = ndimage.binary_dilation(padded, footprint)
    closed = ndimage.binary_erosion(closed, footprint, border_value=1)
    opened = ndimage.binary_dilation(ndimage.binary_erosion(closed, footprint, border_value=1), footprint)
    cleaned = opened[2 * radius : -2 * radius, 2 * radius : -2 * radius] if radius else opened
    labels, count = ndimage.label(cleaned)
    if count:
        sizes = np.bincount(labels.ravel())
        cleaned = (sizes > min_object)[labels] & cleaned
    return np.asarray(ndimage.binary_fill_holes(cleaned), dtype=bool)


def disc(radius: int) -> np.ndarray:
    """A (2 radius + 1)^2 boolean disc: the pixels within ``radius`` of the centre."""
    offsets = np.arange(-radius, radius + 1)
    return np.asarray(offsets[:, np.newaxis] ** 2 + offsets[np.newaxis, :] ** 2 <= radius**2)


def look_values(
    source: ImageSource, levels: ImageLevels, pixels: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, tuple[float, float]]:
    """(k, h, w) block means of ``pixels`` over the look, and the look's scale (level-0 pixels per look pixel).

    The look is the finest level with both sides at most ``LOOK_SIDE``, else the coarsest level averaged over
    whole blocks of it; the level is read a band of rows at a time.
    """
    fits = [lv for lv in levels.levels if max(lv.shape[1:]) <= LOOK_SIDE]
    level = fits[0] if fits else levels.levels[-1]
    _, height, width = level.shape
    block = max(1, math.ceil(max(height, width) / LOOK_SIDE))
    reader = level_source(source, levels, level.index)
    stored = reader.stored_array()
    rows, cols = math.ceil(height / block), math.ceil(width / block)
    bands = []
    for t0 in range(0, rows, LOOK_BAND_ROWS):
        target = Region(t0, min(rows, t0 + LOOK_BAND_ROWS), 0, cols)
        have = Region(t0 * block, min(height, target.y1 * block), 0, width)
        data = pixels(reader.read(have.y0, have.y1, 0, width, stored))
        bands.append(resample_region(data, have, target, (block, block), height, width))
    scale = (level.downsample[0] * block, level.downsample[1] * block)
    return np.concatenate(bands, axis=1), scale


def tissue_foreground(source: ImageSource, levels: ImageLevels, method: str = "saturation") -> Foreground:
    """Tissue found on the look of a brightfield RGB image."""
    if source.channels < 3:
        raise ConfigError(f"{source.path}: --foreground tissue needs an RGB image; it has {source.channels} band(s)")
    values, scale = look_values(source, levels, lambda block: block[:3])
    dtype = np.dtype(source.dtype)
    if dtype.kind in "ui":  # the look is averaged as floats; keep the scale of the stored type
        values /= np.float32(np.iinfo(dtype).max)
    return Foreground(tissue_mask(values, method), scale, "tissue")


def nodata_foreground(source: ImageSource, levels: ImageLevels, nodata: Nodata | None = None) -> Foreground:
    """Pixels holding data, from the look: a look pixel is foreground when any pixel it covers holds data."""
    declared = read_nodata(source) if nodata is None else nodata
    values, scale = look_values(source, levels, lambda block: valid_pixels(block, declared)[np.newaxis])
    return Foreground(values[0] > 0, scale, "nodata")


def mask_foreground(url: str, image: ImageSource) -> Foreground:
    """A user's mask (any TIFF or Zarr label image, any resolution, same aspect ratio): non-zero means compute.

    Raises:
        InputError: the mask cannot be read, or its aspect ratio is not the image's.
    """
    mask = open_image(url)
    scale_y, scale_x = image.height / mask.height, image.width / mask.width
    rounding = max(1 / mask.height, 1 / mask.width)  # one mask pixel more or less
    if abs(scale_y - scale_x) / max(scale_y, scale_x) > max(ASPECT_RTOL, rounding):
        raise InputError(
            f"{mask.path}: foreground mask of {mask.height} x {mask.width} pixels has another aspect ratio than "
            f"{image.path} ({image.height} x {image.width}); it must cover the whole image at some scale"
        )
    single = ImageLevels(mask.path, (Level(0, mask.shape, (1.0, 1.0), None),))
    values, scale = look_values(mask, single, lambda block: (block != 0).any(axis=0)[np.newaxis])
    return Foreground(values[0] > 0, (scale_y * scale[0], scale_x * scale[1]), "mask")


def choose_foreground(spec: str, source: ImageSource, levels: ImageLevels) -> Foreground | None:
    """The foreground ``--foreground`` names (``auto``, ``none``, ``nodata``, ``tissue`` or a mask URL).

    ``auto``: nodata where the file declares it, tissue for an RGB 8-bit pyramid (a whole-slide image),
    otherwise None (every chunk is computed).
    """
    if spec == "none":
        return None
    if spec == "nodata":
        return nodata_foreground(source, levels)
    if spec == "tissue":
        return tissue_foreground(source, levels)
    if spec == "auto":
        declared = read_nodata(source)
        if declared.declared:
            return nodata_foreground(source, levels, declared)
        if source.channels in (3, 4) and np.dtype(source.dtype) == np.uint8 and len(levels.levels) > 1:
            return tissue_foreground(source, levels)
        return None
    return mask_foreground(spec, source)


class ForegroundIndex:
    """Answers, for regions of an output grid, whether a low-resolution mask has foreground within a halo of them.

    A summed-area table of the mask: each question costs four look-ups, whatever the region's size.
    """

    def __init__(self, mask: np.ndarray, mask_scale: tuple[float, float], grid_scale: tuple[float, float]) -> None:
        """Index ``mask`` (level-0 pixels per mask pixel: ``mask_scale``) for a grid of ``grid_scale``."""
        self.shape = mask.shape
        self.table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
        self.table[1:, 1:] = mask.cumsum(axis=0).cumsum(axis=1)
        self.per_y, self.per_x = grid_scale[0] / mask_scale[0], grid_scale[1] / mask_scale[1]

    def touches(self, region: Region, halo: int) -> bool:
        """Whether any mask pixel under grid ``region`` grown by ``halo`` is foreground."""
        grown, (rows, cols) = region.grow(halo), self.shape
        y0 = min(rows, max(0, math.floor(grown.y0 * self.per_y)))
        y1 = min(rows, max(0, math.ceil(grown.y1 * self.per_y)))
        x0 = min(cols, max(0, math.floor(grown.x0 * self.per_x)))
        x1 = min(cols, max(0, math.ceil(grown.x1 * self.per_x)))
        table = self.table
        return bool(table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0] > 0)


def foreground_chunks(
    foreground: Foreground, grid: tuple[int, int], grid_scale: tuple[float, float], chunk: int, halo: int
) -> frozenset[Region]:
    """The chunks of the output grid (``chunk_grid(*grid, chunk)``) with foreground within ``halo`` of them.

    Args:
        foreground: the low-resolution mask.
        grid: (rows, columns) of the output grid (the model's resolution).
        grid_scale: level-0 pixels per output pixel, (y, x).
        chunk: the output chunk edge, in output pixels.
        halo: context around a chunk, in output pixels; foreground there keeps the chunk.
    """
    index = ForegroundIndex(foreground.mask, foreground.scale, grid_scale)
    return frozenset(r for r in chunk_grid(grid[0], grid[1], chunk) if index.touches(r, halo))


def background_tiles(
    index: ForegroundIndex, chunks: Iterable[Region], tile: int, halo: int
) -> dict[Region, frozenset[Region]]:
    """For each of ``chunks``, its ``trim`` tiles (chunk coordinates) with no foreground within ``halo``.

    Chunks whose tiles all have foreground are left out. Such a tile's pixels are outside the foreground and so
    is everything the model sees of it: it can be written as background without being computed.
    """
    found = {}
    for region in chunks:
        tiles = tiles_in(Region(0, region.height, 0, region.width), tile)
        empty = frozenset(t for t in tiles if not index.touches(t.shift(region.y0, region.x0), halo))
        if empty:
            found[region] = empty
    return found


__all__ = [
    "FOREGROUNDS",
    "Foreground",
    "ForegroundIndex",
    "background_tiles",
    "Nodata",
    "choose_foreground",
    "clean_mask",
    "foreground_chunks",
    "mask_foreground",
    "nodata_foreground",
    "read_nodata",
    "tissue_foreground",
    "tissue_mask",
    "valid_pixels",
]
