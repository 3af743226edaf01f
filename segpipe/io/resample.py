"""Resampling a window of a stored level onto the model's grid, on the fly: pure numpy, no I/O.

The model grid has ``factor`` level pixels per grid pixel on each axis (see ``segpipe.io.levels.LevelChoice``).
Grid pixel ``t`` covers level pixels ``[t * f, (t + 1) * f)``; its value is the area-weighted mean of the level
pixels it overlaps (an area average when shrinking, a box enlargement when ``f < 1``). Weights depend only on
absolute positions, so a stage reads ``source_region(target)`` for one target window, resamples it, and the
windows put together equal the whole image resampled. A whole-number factor weighs every pixel of its block by
exactly 1: the result is the block mean. Non-finite pixels (NaN nodata) are left out of the means; a grid pixel
covering none but them is NaN. The last grid pixel of a side may cover the image only in part: it averages what
it covers.
"""

from __future__ import annotations

import math

import numpy as np

from segpipe.errors import ConfigError
from segpipe.tiling import Region

EPSILON = 1e-9  # a factor times an index is a whole number of level pixels up to this much rounding


def resampled_shape(height: int, width: int, factor: tuple[float, float]) -> tuple[int, int]:
    """(rows, columns) of the model grid over a level of ``height`` x ``width`` pixels.

    Raises:
        ConfigError: a factor that is not finite and positive.
    """
    _check(factor)
    return _cells(height, factor[0]), _cells(width, factor[1])


def source_region(target: Region, factor: tuple[float, float], height: int, width: int) -> Region:
    """The region of the level (``height`` x ``width``) that grid pixels ``target`` cover: what to read."""
    _check(factor)
    y0, y1 = _span(target.y0, target.y1, factor[0], height)
    x0, x1 = _span(target.x0, target.x1, factor[1], width)
    return Region(y0, y1, x0, x1)


def resample_region(
    data: np.ndarray, have: Region, target: Region, factor: tuple[float, float], height: int, width: int
) -> np.ndarray:
    """Grid pixels ``target`` from ``data`` (C, h, w), the level's pixels ``have``.

    The level is ``height`` x ``width``; ``have`` must hold ``source_region(target, ...)``.

    Returns:
        A (C, target height, target width) float array: float64 for float64 pixels, float32 otherwise.

    Raises:
        ConfigError: a bad factor, or ``have`` does not hold what ``target`` covers.
    """
    need = source_region(target, factor, height, width)
    if need.y0 < have.y0 or need.y1 > have.y1 or need.x0 < have.x0 or need.x1 > have.x1:
        raise ConfigError(f"resampling {target} needs level pixels {need}, but only {have} were read")
    if data.shape[-2:] != (have.height, have.width):
        raise ConfigError(f"resampling: data of shape {data.shape} is not region {have}")
    out_dtype = np.float64 if data.dtype == np.float64 else np.float32
    if all(float(f).is_integer() for f in factor):
        inner = data[..., need.y0 - have.y0 : need.y1 - have.y0, need.x0 - have.x0 : need.x1 - have.x0]
        sums, counts = _block_sums(inner, target, (int(factor[0]), int(factor[1])))
    else:
        rows = _weights(target.y0, target.y1, factor[0], have.y0, have.y1, height)
        cols = _weights(target.x0, target.x1, factor[1], have.x0, have.x1, width)
        values, finite = _finite(data)
        sums = _apply(values, rows, cols)
        counts = _apply(finite.astype(np.float64), rows, cols)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray((sums / counts).astype(out_dtype))


def resample(image: np.ndarray, factor: tuple[float, float]) -> np.ndarray:
    """A whole (C, Y, X) image on the model grid (what the windows of ``resample_region`` put together equal)."""
    height, width = image.shape[-2:]
    rows, cols = resampled_shape(height, width, factor)
    whole = Region(0, height, 0, width)
    return resample_region(image, whole, Region(0, rows, 0, cols), factor, height, width)


def _check(factor: tuple[float, float]) -> None:
    if len(factor) != 2 or not all(math.isfinite(f) and f > 0 for f in factor):
        raise ConfigError(f"resampling factor {factor} must be two positive numbers (y, x)")


def _cells(size: int, factor: float) -> int:
    return max(1, math.ceil(size / factor - EPSILON))


def _span(t0: int, t1: int, factor: float, size: int) -> tuple[int, int]:
    start = math.floor(t0 * factor + EPSILON)
    stop = math.ceil(t1 * factor - EPSILON)
    return max(0, min(start, size)), max(0, min(stop, size))


def _weights(t0: int, t1: int, factor: float, s0: int, s1: int, size: int) -> np.ndarray:
    """(targets, sources) overlap lengths of grid pixels [t0, t1) with level pixels [s0, s1)."""
    starts = np.arange(t0, t1, dtype=np.float64) * factor
    stops = np.minimum(starts + factor, size)
    pixels = np.arange(s0, s1, dtype=np.float64)
    low = np.maximum(starts[:, None], pixels[None, :])
    high = np.minimum(stops[:, None], pixels[None, :] + 1.0)
    overlap = np.clip(high - low, 0.0, None)
    overlap[overlap < EPSILON] = 0.0
    return np.asarray(overlap)


def _finite(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``data`` as float64 with non-finite pixels 0, and where it is finite."""
    values = np.asarray(data, dtype=np.float64)
    finite = np.isfinite(values)
    return (values if finite.all() else np.where(finite, values, 0.0)), finite


def _block_sums(data: np.ndarray, target: Region, factor: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Sums and counts of the finite pixels of each whole-number block (a block mean, edge blocks in part)."""
    fy, fx = factor
    shape = (data.shape[0], target.height * fy, target.width * fx)
    values, finite = _finite(data)
    if values.shape != shape:  # a last block that the image covers in part: pad with pixels that do not count
        pad = ((0, 0), (0, shape[1] - values.shape[1]), (0, shape[2] - values.shape[2]))
        values, finite = np.pad(values, pad), np.pad(finite, pad)
    blocks = (shape[0], target.height, fy, target.width, fx)
    return values.reshape(blocks).sum(axis=(2, 4)), finite.reshape(blocks).sum(axis=(2, 4))


def _apply(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``rows @ band @ cols.T`` for every band of (C, h, w) ``values``."""
    across = np.tensordot(values, cols, axes=([-1], [1]))  # (C, h, tw)
    return np.moveaxis(np.tensordot(rows, across, axes=([1], [-2])), 0, -2)  # (C, th, tw)


__all__ = ["resample", "resample_region", "resampled_shape", "source_region"]
