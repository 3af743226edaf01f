"""Inputs the benchmarks make for themselves: synthetic nuclei images, a gigapixel TIFF written tile by tile, a
near-free model (a TorchScript 1x1 convolution with its card), and RGB slides with a third of tissue on glass."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from torch import nn

from segpipe.models.backends.builtin import BUILTIN_WEIGHTS
from segpipe.synthetic import NOISE_TILE, noisy_tile, write_sample

STREAM_TILE = 512
POOL = 8  # distinct tiles the streamed TIFF cycles through
BIGTIFF_FROM = 16384  # edge from which the streamed TIFF is a BigTIFF (a compressed gigapixel nears 4 GiB)
POINTWISE_CARD = {
    "name": "bench-pointwise",
    "in_channels": 1,
    "num_classes": 2,
    "class_names": ["background", "foreground"],
    "size_divisor": 1,
    "halo": 0,
    "receptive_field": 0,
    "normalization": "none",
}


def sample(directory: Path, size: int, seed: int = 0) -> tuple[Path, Path]:
    """The synthetic nuclei image ``synth{size}s{seed}.tif`` and its truth, written once."""
    name = f"synth{size}s{seed}"
    image, truth = directory / f"{name}.tif", directory / f"{name}_truth.tif"
    if image.exists() and truth.exists():
        return image, truth
    return write_sample(directory, size, seed, name=name)


def tile_pool(seed: int, tile: int = STREAM_TILE, count: int = POOL) -> list[np.ndarray]:
    """``count`` uint16 nuclei tiles of ``tile``^2 (each made of synthetic 256-pixel noise tiles)."""
    per_side = -(-tile // NOISE_TILE)
    pool = []
    for k in range(count):
        first = k * per_side  # pool tile k is made of noise tiles from rows first .. first + per_side
        block = np.block([[noisy_tile(first + i, j, seed)[0] for j in range(per_side)] for i in range(per_side)])
        pool.append(np.ascontiguousarray(block[:tile, :tile]))
    return pool


def write_streamed_tiff(path: Path, size: int, seed: int = 0, tile: int = STREAM_TILE) -> Path:
    """A ``size``^2 uint16 tiled, deflate-compressed TIFF written one tile at a time, so memory stays at a few
    tiles whatever the size. Tiles cycle through a small pool of rendered nuclei tiles (rendering a gigapixel
    would take longer than segmenting it with the near-free model)."""
    pool = tile_pool(seed, tile)
    per_side = -(-size // tile)
    return _write_tiles(path, size, tile, _cycle(pool, per_side * per_side))


LATTICE_PITCH = 32  # pixels between object centres: (size / 32 + 1)^2 objects, 1,050,625 at 32768^2
LATTICE_RADII = (5, 11)  # disc radii, least and most; with the centres' jitter a disc stays inside its cell
LATTICE_JITTER = 3
LATTICE_VALUES = (200, 3000)  # background and object: either side of the near-free model's 1000


def lattice_count(size: int, pitch: int = LATTICE_PITCH) -> int:
    """The objects ``write_lattice_tiff`` draws on a ``size``^2 image (a multiple of ``pitch``): one per lattice
    point from 0 to ``size`` on each axis (those on the last row and column reach into the image, as jitter is
    less than the least radius)."""
    if size % pitch:
        raise ValueError(f"the lattice image's edge is a multiple of {pitch}, not {size}")
    return (size // pitch + 1) ** 2


def lattice_tile(y0: int, x0: int, height: int, width: int, pitch: int = LATTICE_PITCH) -> np.ndarray:
    """One tile of the lattice image: a disc at every point (row, col) = pitch * (i, j) + jitter, its radius
    and jitter a function of (i, j). Points lie on chunk borders, so discs cross them and the merge is exercised;
    discs never touch (radius + jitter < pitch / 2), so every one is its own object."""
    rows = np.arange(y0, y0 + height, dtype=np.int64)[:, np.newaxis]
    cols = np.arange(x0, x0 + width, dtype=np.int64)[np.newaxis, :]
    i, j = np.rint(rows / pitch).astype(np.int64), np.rint(cols / pitch).astype(np.int64)
    low, high = LATTICE_RADII
    code = (i * 7919 + j * 104729) % 9973  # a cheap, fixed hash of the lattice point
    radius = low + code % (high - low + 1)
    dy = i * pitch + (code // 7) % (2 * LATTICE_JITTER + 1) - LATTICE_JITTER
    dx = j * pitch + (code // 61) % (2 * LATTICE_JITTER + 1) - LATTICE_JITTER
    inside = (rows - dy) ** 2 + (cols - dx) ** 2 <= radius**2
    return np.where(inside, LATTICE_VALUES[1], LATTICE_VALUES[0]).astype(np.uint16)


def write_lattice_tiff(path: Path, size: int, tile: int = STREAM_TILE) -> Path:
    """A ``size``^2 uint16 tiled, deflate-compressed TIFF of ``lattice_count(size)`` separate discs, written one
    tile at a time (memory stays at a few tiles): the dense-objects input of the gigapixel objects check."""
    per_side = -(-size // tile)
    tiles = (lattice_tile(r * tile, c * tile, tile, tile) for r in range(per_side) for c in range(per_side))
    return _write_tiles(path, size, tile, tiles)


def _write_tiles(path: Path, size: int, tile: int, tiles: Iterator[np.ndarray]) -> Path:
    """A ``size``^2 uint16 tiled, deflate-compressed (Big)TIFF from ``tiles`` in row-major order."""
    tifffile.imwrite(
        path,
        tiles,
        shape=(size, size),
        dtype=np.uint16,
        tile=(tile, tile),
        compression="zlib",
        bigtiff=size >= BIGTIFF_FROM,
    )
    return path


def _cycle(pool: list[np.ndarray], count: int) -> Iterator[np.ndarray]:
    for index in range(count):
        yield pool[(index * 5 + index // 7) % len(pool)]


class Pointwise(nn.Module):
    """Two logits per pixel from a 1x1 convolution: class 1 where the raw value exceeds ``threshold``."""

    def __init__(self, threshold: float = 1000.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        assert self.conv.bias is not None
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([0.0, 1e-3]).reshape(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([threshold * 1e-3, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def write_pointwise_model(directory: Path) -> Path:
    """Save the near-free model as TorchScript ``pointwise.pt`` with its card ``pointwise.json``; return the
    model's path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "pointwise.pt"
    torch.jit.save(torch.jit.script(Pointwise().eval()), str(path))
    path.with_suffix(".json").write_text(json.dumps(POINTWISE_CARD, indent=2) + "\n")
    return path


APERIO = "Aperio Image Library v12.0.15"
SLIDE_TILE = 256
TISSUE_DISCS = ((0.35, 0.3, 0.237), (0.6, 0.45, 0.219), (0.5, 0.75, 0.152))  # (y, x, radius): a third of the slide
RGB_CARD = {
    "name": "bench-unet-rgb",
    "in_channels": 1,
    "num_classes": 2,
    "class_names": ["background", "nucleus"],
    "size_divisor": 4,
    "halo": 28,
    "receptive_field": 26,
    "bands": [2],
    "preprocessing": [{"id": "scale_linear", "kwargs": {"gain": 1 / 255, "offset": 0.0}}],
    "architecture": {"name": "unet", "base": 16, "depth": 3},
}


def tissue_image(size: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """A ``size``^2 RGB brightfield slide, about a third pink and purple tissue on white glass, and its tissue share.

    Rendered in strips of rows, so the float temporaries stay a few strips whatever the size.
    """
    rng = np.random.default_rng(seed)
    image = np.empty((size, size, 3), np.uint8)
    pink, purple = np.array([225.0, 140.0, 185.0], np.float32), np.array([120.0, 70.0, 160.0], np.float32)
    tissue = 0
    cols = np.arange(size, dtype=np.float32)[np.newaxis, :]
    for y0 in range(0, size, SLIDE_TILE):
        rows = np.arange(y0, min(y0 + SLIDE_TILE, size), dtype=np.float32)[:, np.newaxis]
        truth = np.zeros((rows.shape[0], size), bool)
        for cy, cx, r in TISSUE_DISCS:
            truth |= (rows - cy * size) ** 2 + (cols - cx * size) ** 2 < (r * size) ** 2
        strip = rng.normal(238, 3, (rows.shape[0], size, 3)).astype(np.float32)
        mix = rng.random((rows.shape[0], size, 1), dtype=np.float32)
        stain = mix * pink + (1 - mix) * purple + rng.normal(0, 12, strip.shape).astype(np.float32)
        strip[truth] = stain[truth]
        image[y0 : y0 + rows.shape[0]] = np.clip(strip, 0, 255).astype(np.uint8)
        tissue += int(truth.sum())
    return image, tissue / size**2


def write_slide(path: Path, image: np.ndarray, mpp: float, downsamples: tuple[int, ...] = (2, 4, 16)) -> Path:
    """An Aperio SVS of ``image`` at ``mpp`` um/px: tiled JPEG levels (baseline, then each downsample)."""
    height, width = image.shape[:2]
    head = f"{APERIO} \r\n{width}x{height} [0,0 {width}x{height}] ({SLIDE_TILE}x{SLIDE_TILE}) JPEG/RGB Q=90"
    jpeg: dict[str, Any] = {"photometric": "rgb", "compression": "jpeg", "compressionargs": {"level": 90}}
    tile = (SLIDE_TILE, SLIDE_TILE)
    with tifffile.TiffWriter(path, bigtiff=image.nbytes >= 2**31) as tif:
        tif.write(image, tile=tile, description=f"{head}|AppMag = 40|MPP = {mpp}", metadata=None, **jpeg)
        thumbnail = np.ascontiguousarray(image[:: max(1, height // 256), :: max(1, width // 256)])
        tif.write(thumbnail, description=f"{head} -> thumbnail", metadata=None, **jpeg)
        for factor in downsamples:
            level = np.ascontiguousarray(image[::factor, ::factor])
            size = f"{level.shape[1]}x{level.shape[0]}"
            tif.write(level, tile=tile, description=f"{head} -> {size} JPEG/RGB Q=90", metadata=None, **jpeg)
    return path


def write_rgb_model(directory: Path, name: str = "unet_rgb", **card: Any) -> Path:
    """The built-in U-Net's weights with a card for RGB slides (the green band, a fixed scale, no image statistic,
    so a run's output inside tissue does not depend on which pixels were measured); ``card`` adds to it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.pt"
    shutil.copyfile(BUILTIN_WEIGHTS, path)
    path.with_suffix(".json").write_text(json.dumps({**RGB_CARD, **card}, indent=2) + "\n")
    return path
