"""Deterministic, tile-by-tile generator of fluorescence-microscopy-like nuclei images with ground truth.

Nuclei are soft-edged ellipses scattered by a per-cell seeded RNG, so any region renders the same pixels no
matter how the image is cut up; noise is seeded per fixed 256-pixel tile. Nothing is held whole in memory:
``write_sample`` streams tiles into tiled, compressed TIFFs. Classes: 0 background, 1 nucleus.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

CELL = 48  # nucleus placement grid
MAX_SEMI_AXIS = 15.0
NOISE_TILE = 256
NUCLEI_PER_CELL = 2.2  # ~20% of pixels are nucleus, as in the DSB 2018 sample
CLASS_NAMES = ("background", "nucleus")


@dataclass(frozen=True)
class Nuclei:
    """Ellipse parameters, one entry per nucleus."""

    cy: np.ndarray
    cx: np.ndarray
    semi_major: np.ndarray
    semi_minor: np.ndarray
    angle: np.ndarray
    brightness: np.ndarray
    phase: np.ndarray  # texture phase, a property of the nucleus (not of its index in one render)


def nuclei_near(y0: int, y1: int, x0: int, x1: int, seed: int) -> Nuclei:
    """All nuclei whose centre cell lies within one nucleus radius of the box."""
    margin = int(np.ceil(MAX_SEMI_AXIS)) + 4  # render draws out to ceil(semi_major) + 3 from int(centre)
    rows = range((y0 - margin) // CELL, (y1 + margin) // CELL + 1)
    cols = range((x0 - margin) // CELL, (x1 + margin) // CELL + 1)
    parts = [_nuclei_in_cell(r, c, seed) for r in rows for c in cols]
    return Nuclei(*(np.concatenate([getattr(p, f) for p in parts]) for f in Nuclei.__dataclass_fields__))


def _nuclei_in_cell(row: int, col: int, seed: int) -> Nuclei:
    rng = np.random.default_rng([seed, row & 0xFFFFFFFF, col & 0xFFFFFFFF])
    n = rng.poisson(NUCLEI_PER_CELL)
    major = rng.uniform(8.0, MAX_SEMI_AXIS, n)
    bright = np.where(rng.random(n) < 0.05, rng.uniform(0.8, 1.0, n), rng.uniform(0.18, 0.5, n))
    return Nuclei(
        cy=row * CELL + rng.uniform(0, CELL, n),
        cx=col * CELL + rng.uniform(0, CELL, n),
        semi_major=major,
        semi_minor=major * rng.uniform(0.55, 0.9, n),
        angle=rng.uniform(0, np.pi, n),
        brightness=bright,
        phase=rng.uniform(0, 2 * np.pi, n),
    )


def render(y0: int, y1: int, x0: int, x1: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (float32, ~0..1) and truth (uint8 classes) of the box [y0:y1, x0:x1], without noise."""
    image, instances = render_instances(y0, y1, x0, x1, seed)
    return image, (instances > 0).astype(np.uint8)


def render_instances(y0: int, y1: int, x0: int, x1: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (float32, ~0..1) and instance ids (int32, 0 background) of the box [y0:y1, x0:x1], without noise.

    Where nuclei overlap, a pixel belongs to the one whose ellipse it lies deeper in (smaller normalised
    distance). Ids number the nuclei in the order ``nuclei_near`` lists them, so they depend on the box.
    """
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    signal = np.zeros(yy.shape, np.float32)
    truth = np.zeros(yy.shape, np.int32)
    depth = np.full(yy.shape, np.inf, np.float32)
    nuclei = nuclei_near(y0, y1, x0, x1, seed)
    for i in range(len(nuclei.cy)):
        r = int(np.ceil(nuclei.semi_major[i])) + 3
        ys = slice(max(int(nuclei.cy[i]) - r - y0, 0), max(int(nuclei.cy[i]) + r + 1 - y0, 0))
        xs = slice(max(int(nuclei.cx[i]) - r - x0, 0), max(int(nuclei.cx[i]) + r + 1 - x0, 0))
        if ys.start >= ys.stop or xs.start >= xs.stop:
            continue
        dist = _ellipse_distance(yy[ys, xs], xx[ys, xs], nuclei, i)
        edge = 1.0 / (1.0 + np.exp(-(1.0 - dist) * nuclei.semi_minor[i] / 1.2))
        texture = 1.0 + 0.12 * np.sin(xx[ys, xs] * 0.9 + nuclei.phase[i]) * np.cos(yy[ys, xs] * 0.7)
        np.maximum(signal[ys, xs], nuclei.brightness[i] * edge * texture, out=signal[ys, xs])
        inside = (dist < 1.0) & (dist < depth[ys, xs])
        truth[ys, xs][inside] = i + 1
        depth[ys, xs][inside] = dist[inside]
    background = 0.06 + 0.03 * np.sin(yy / 700.0) * np.cos(xx / 900.0)
    return (background + signal).astype(np.float32), truth


def _ellipse_distance(yy: np.ndarray, xx: np.ndarray, nuclei: Nuclei, i: int) -> np.ndarray:
    dy, dx = yy - nuclei.cy[i], xx - nuclei.cx[i]
    cos, sin = np.cos(nuclei.angle[i]), np.sin(nuclei.angle[i])
    u = (dx * cos + dy * sin) / nuclei.semi_major[i]
    v = (-dx * sin + dy * cos) / nuclei.semi_minor[i]
    distance: np.ndarray = np.sqrt(u * u + v * v)
    return distance


def noisy_tile(ty: int, tx: int, seed: int, noise: float = 0.025) -> tuple[np.ndarray, np.ndarray]:
    """One NOISE_TILE x NOISE_TILE tile of the uint16 image (12-bit camera-like) and its truth."""
    y0, x0 = ty * NOISE_TILE, tx * NOISE_TILE
    image, truth = render(y0, y0 + NOISE_TILE, x0, x0 + NOISE_TILE, seed)
    rng = np.random.default_rng([seed, 1 << 20, ty, tx])
    image = image + rng.normal(0.0, noise, image.shape).astype(np.float32)
    return np.clip(image * 4000.0 + 100.0, 0, 65535).astype(np.uint16), truth


def write_sample(directory: str | Path, size: int, seed: int = 0, name: str = "sample") -> tuple[Path, Path]:
    """Write ``name``.tif (uint16 image) and ``name``_truth.tif (uint8 classes), ``size`` x ``size``.

    Both are tiled 256 x 256 and deflate-compressed, streamed one tile at a time.

    Returns:
        The image's path and the truth's path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    image_path, truth_path = directory / f"{name}.tif", directory / f"{name}_truth.tif"
    n = -(-size // NOISE_TILE)
    grid = [(ty, tx) for ty in range(n) for tx in range(n)]
    for path, which, dtype in ((image_path, 0, np.uint16), (truth_path, 1, np.uint8)):
        tifffile.imwrite(
            path,
            _tiles(grid, seed, which),
            dtype=dtype,
            shape=(size, size),
            tile=(NOISE_TILE, NOISE_TILE),
            compression="zlib",
            bigtiff=size > 30000,
        )
    return image_path, truth_path


def _tiles(grid: list[tuple[int, int]], seed: int, which: int) -> Iterator[np.ndarray]:
    for ty, tx in grid:
        yield noisy_tile(ty, tx, seed)[which]
