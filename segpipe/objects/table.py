"""Per-object measurements of an id image, accumulated exactly from per-block partial sums.

``object_sums`` (worker side, pure) measures the objects of one block of the id image read with a
``HALO``-pixel margin (``read_with_halo``); ``merge_sums`` (driver) adds the partials up; ``finish`` turns the
sums into an ``ObjectTable``. Columns follow ``skimage.measure.regionprops``: area and centroid are integer sums
divided once; the bounding box ends are exclusive; the perimeter is regionprops' (Benkrid and Crookes: border
pixels by a 4-neighbour erosion, each weighted by its 3x3 pattern of border neighbours), kept per block as
integer counts of the weighted patterns, so sums over blocks are exact. A border pixel's pattern needs its
neighbours' border status, hence two pixels of halo. Mean intensity and confidence are sums over pixels:
exact for integer images, equal to rounding for floating-point ones.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from math import sqrt
from typing import Any

import numpy as np

from segpipe.errors import InputError
from segpipe.objects.grid import Block, blocks_of

HALO = 2
ROWS_AT_ONCE = 1 << 16  # objects whose pattern histograms ``finish`` holds at once
SPREAD = 4  # ``_distinct`` counts when a block's ids span at most this many times its pixels
_PATTERNS = np.array([5, 7, 13, 15, 17, 21, 23, 25, 27, 33])  # the 3x3 codes regionprops weighs above zero
_WEIGHTS = np.zeros(50)
_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1
_WEIGHTS[[21, 33]] = sqrt(2)
_WEIGHTS[[13, 23]] = (1 + sqrt(2)) / 2
_BIN = np.full(50, -1)
_BIN[_PATTERNS] = np.arange(_PATTERNS.size)


@dataclass(frozen=True)
class ObjectSums:
    """Additive per-object partial sums over some pixels (one block, or merged blocks).

    Attributes:
        ids: Object ids, sorted.
        classes: Class value of each object.
        area, sum_row, sum_col: Pixel count and sums of row and column indices.
        min_row, min_col, max_row, max_col: Inclusive bounds of the pixels seen.
        patterns: Per object, counts of border pixels with each of the weighted 3x3 codes (n x 10).
        intensity: Per object and band, sum of intensities (n x bands), or None.
        confidence: Per object, sum of confidence, or None.
    """

    ids: np.ndarray
    classes: np.ndarray
    area: np.ndarray
    sum_row: np.ndarray
    sum_col: np.ndarray
    min_row: np.ndarray
    min_col: np.ndarray
    max_row: np.ndarray
    max_col: np.ndarray
    patterns: np.ndarray
    intensity: np.ndarray | None = None
    confidence: np.ndarray | None = None


@dataclass(frozen=True)
class ObjectTable:
    """One row per object; bbox ends exclusive; ``mean_intensity`` is objects x bands."""

    object_id: np.ndarray
    object_class: np.ndarray
    area: np.ndarray
    centroid_row: np.ndarray
    centroid_col: np.ndarray
    bbox_min_row: np.ndarray
    bbox_min_col: np.ndarray
    bbox_max_row: np.ndarray
    bbox_max_col: np.ndarray
    perimeter: np.ndarray
    equivalent_diameter: np.ndarray
    touches_edge: np.ndarray
    mean_intensity: np.ndarray | None = None
    mean_confidence: np.ndarray | None = None

    def __len__(self) -> int:
        """The number of objects."""
        return int(self.object_id.size)

    def to_arrow(self) -> Any:
        """The table as a ``pyarrow.Table`` (``class`` for the class column, one ``mean_intensity_<b>`` per band)."""
        import pyarrow as pa

        columns: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name == "mean_intensity":
                columns.update({f"mean_intensity_{b}": value[:, b] for b in range(value.shape[1])})
            else:
                columns["class" if f.name == "object_class" else f.name] = value
        return pa.table(columns)

    def write_parquet(self, path: Any, **kwargs: Any) -> None:
        """Write the table to Parquet with pyarrow (a local path, or ``filesystem=`` a pyarrow filesystem)."""
        import pyarrow.parquet as pq

        pq.write_table(self.to_arrow(), path, **kwargs)


def read_with_halo(array: Any, where: Block, halo: int = HALO) -> np.ndarray:
    """A block of a 2-D array with ``halo`` pixels around it, zeros beyond the array's edge."""
    (y, x), (h, w) = where.origin, where.shape
    rows, cols = array.shape[-2:]
    y0, x0, y1, x1 = max(y - halo, 0), max(x - halo, 0), min(y + h + halo, rows), min(x + w + halo, cols)
    inner = np.asarray(array[y0:y1, x0:x1])
    out = np.zeros((h + 2 * halo, w + 2 * halo), inner.dtype)
    out[y0 - y + halo : y1 - y + halo, x0 - x + halo : x1 - x + halo] = inner
    return out


def _patterns(padded: np.ndarray) -> np.ndarray:
    """Regionprops' 3x3 perimeter code of every core pixel (0 where not a border pixel of its object), as uint8.

    The codes are at most 1 + 4 x 2 + 4 x 10 = 49; uint8 and in-place sums make this a quarter of the time it
    took in int64 with a temporary per neighbour.
    """
    centre = padded[1:-1, 1:-1]
    differs = padded[:-2, 1:-1] != centre
    differs |= padded[2:, 1:-1] != centre
    differs |= padded[1:-1, :-2] != centre
    differs |= padded[1:-1, 2:] != centre
    border = np.zeros(padded.shape, bool)
    np.logical_and(centre != 0, differs, out=border[1:-1, 1:-1])
    h, w = padded.shape[0] - 2 * HALO, padded.shape[1] - 2 * HALO
    core = padded[HALO : HALO + h, HALO : HALO + w]
    code = np.ones(core.shape, np.uint8)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                q = (slice(HALO + dy, HALO + dy + h), slice(HALO + dx, HALO + dx + w))
                code += (border[q] & (padded[q] == core)) * np.uint8(2 if dy == 0 or dx == 0 else 10)
    code *= border[HALO : HALO + h, HALO : HALO + w]
    return code


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(values, return_index, return_inverse, return_counts)``, by counting where the ids are close.

    A block's ids span a narrow range (ids run in raster order over the image), so a bincount over
    ``values - min`` finds them in a sixth of the time of the sort ``np.unique`` does; ids spread wider than
    ``SPREAD`` times the values fall back to the sort.
    """
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if not values.size or high - low > SPREAD * values.size:
        found, first, inv, counts = np.unique(values, return_index=True, return_inverse=True, return_counts=True)
        return found, first, inv, counts.astype(np.int64)
    offset = (values - values.dtype.type(low)).astype(np.intp)
    counts = np.bincount(offset)
    present = np.flatnonzero(counts)
    slot = np.zeros(counts.size, np.intp)
    slot[present] = np.arange(present.size)
    inv = slot[offset]
    first = np.full(present.size, values.size, np.intp)
    np.minimum.at(first, inv, np.arange(values.size))
    return (present + low).astype(values.dtype), first, inv, counts[present].astype(np.int64)


def object_sums(
    ids: np.ndarray,
    where: Block,
    mask: np.ndarray,
    image: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
) -> ObjectSums:
    """The partial sums of one block (worker side, pure).

    Args:
        ids: The block of the id image with ``HALO`` pixels around it (``read_with_halo``).
        where: The block's place in the image.
        mask: The block of the class mask (no halo).
        image: The block of the intensity image, (bands, rows, cols) or (rows, cols), or None.
        confidence: The block of a confidence (e.g. softmax) image, or None.

    Returns:
        Sums over the block's own pixels of every object in it.
    """
    h, w = where.shape
    core = ids[HALO : HALO + h, HALO : HALO + w]
    if core.shape != (h, w) or np.shape(mask) != (h, w):
        raise InputError(
            f"block {where.index}: ids {ids.shape} with halo and mask {np.shape(mask)} do not fit {where.shape}"
        )
    flat = core.ravel()
    at = np.flatnonzero(flat != 0)  # on a bool image: a third of the time on the ids themselves
    found, first, inv, area = _distinct(flat[at])
    n = found.size
    rows, cols = at // w, at % w
    max_row = np.full(n, -1, np.int64)
    np.maximum.at(max_row, inv, rows)
    min_col = np.full(n, w, np.int64)
    max_col = np.full(n, -1, np.int64)
    np.minimum.at(min_col, inv, cols)
    np.maximum.at(max_col, inv, cols)
    code = _patterns(ids).ravel()[at]
    edge = _BIN[code] >= 0
    patterns = np.bincount(inv[edge] * _PATTERNS.size + _BIN[code[edge]], minlength=n * _PATTERNS.size)
    intensity = None
    if image is not None:
        bands = np.asarray(image).reshape(-1, h * w)[:, at]
        intensity = np.zeros((n, bands.shape[0]))
        for band, values in enumerate(bands):
            intensity[:, band] = np.bincount(inv, weights=values, minlength=n)
    y0, x0 = where.origin
    return ObjectSums(
        ids=found.astype(np.uint64),
        classes=np.asarray(mask).ravel()[at[first]].astype(np.int64),
        area=area,
        sum_row=np.bincount(inv, weights=rows, minlength=n).astype(np.int64) + y0 * area,
        sum_col=np.bincount(inv, weights=cols, minlength=n).astype(np.int64) + x0 * area,
        min_row=rows[first] + y0,
        min_col=min_col + x0,
        max_row=max_row + y0,
        max_col=max_col + x0,
        patterns=patterns.reshape(n, _PATTERNS.size).astype(np.int64),
        intensity=intensity,
        confidence=None if confidence is None else np.bincount(inv, weights=np.ravel(confidence)[at], minlength=n),
    )


def merge_sums(parts: list[ObjectSums]) -> ObjectSums:
    """Add partial sums of the same objects over blocks (driver side); the result is one row per object."""
    if not parts:
        raise InputError("no object sums to merge")
    ids, first, inv = np.unique(np.concatenate([p.ids for p in parts]), return_index=True, return_inverse=True)
    n = ids.size

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    def added(name: str) -> np.ndarray:
        values = cat(name)
        out = np.zeros((n, *values.shape[1:]), values.dtype)
        np.add.at(out, inv, values)
        return out

    def bound(name: str, ufunc: np.ufunc, start: int) -> np.ndarray:
        out = np.full(n, start, np.int64)
        ufunc.at(out, inv, cat(name))
        return out

    big = np.iinfo(np.int64).max
    optional = {
        name: added(name) if all(getattr(p, name) is not None for p in parts) else None
        for name in ("intensity", "confidence")
    }
    return ObjectSums(
        ids=ids,
        classes=cat("classes")[first],
        area=added("area"),
        sum_row=added("sum_row"),
        sum_col=added("sum_col"),
        min_row=bound("min_row", np.minimum, big),
        min_col=bound("min_col", np.minimum, big),
        max_row=bound("max_row", np.maximum, -1),
        max_col=bound("max_col", np.maximum, -1),
        patterns=added("patterns"),
        **optional,
    )


def finish(sums: ObjectSums, shape: tuple[int, int]) -> ObjectTable:
    """The object table from merged sums of an image of ``shape`` (rows, cols)."""
    area = sums.area
    perimeter = np.zeros(area.size, np.float64)
    for start in range(0, area.size, ROWS_AT_ONCE):  # a million objects' histograms would be 400 MB at once
        histogram = np.zeros((min(ROWS_AT_ONCE, area.size - start), _WEIGHTS.size), np.int64)
        histogram[:, _PATTERNS] = sums.patterns[start : start + ROWS_AT_ONCE]
        perimeter[start : start + len(histogram)] = [row @ _WEIGHTS for row in histogram]  # regionprops' own dot
    max_row, max_col = sums.max_row + 1, sums.max_col + 1
    return ObjectTable(
        object_id=sums.ids,
        object_class=sums.classes,
        area=area,
        centroid_row=sums.sum_row / area,
        centroid_col=sums.sum_col / area,
        bbox_min_row=sums.min_row,
        bbox_min_col=sums.min_col,
        bbox_max_row=max_row,
        bbox_max_col=max_col,
        perimeter=perimeter,
        equivalent_diameter=np.array([(2 * 2 * float(a) / np.pi) ** (1 / 2) for a in area], np.float64),
        touches_edge=(sums.min_row == 0) | (sums.min_col == 0) | (max_row == shape[0]) | (max_col == shape[1]),
        mean_intensity=None if sums.intensity is None else sums.intensity / area[:, None],
        mean_confidence=None if sums.confidence is None else sums.confidence / area,
    )


def object_table(ids: Any, mask: Any, image: Any = None, confidence: Any = None, chunks: Any = None) -> ObjectTable:
    """Measure every object of an id image block by block (serially; a stage maps ``object_sums`` instead).

    Args:
        ids: The id image (``segpipe.objects.components``), 2-D, sliceable.
        mask: The class mask of the same shape.
        image: Intensities, (bands, rows, cols) or (rows, cols), or None.
        confidence: Per-pixel confidence of the same shape as the mask, or None.
        chunks: Block shape; default ``ids.chunks``.

    Returns:
        The object table, rows by object id.
    """
    shape = tuple(ids.shape)
    for name, other in (("mask", mask), ("image", image), ("confidence", confidence)):
        if other is not None and tuple(other.shape[-2:]) != shape:
            raise InputError(f"the {name} is {tuple(other.shape)} but the id image is {shape}")
    parts = []
    for b in blocks_of(ids, chunks):
        band = None if image is None else np.asarray(image[(..., *b.slices)])
        conf = None if confidence is None else np.asarray(confidence[b.slices])
        parts.append(object_sums(read_with_halo(ids, b), b, np.asarray(mask[b.slices]), band, conf))
    return finish(merge_sums(parts), (shape[0], shape[1]))
