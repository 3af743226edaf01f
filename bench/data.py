"""Inputs the benchmarks make for themselves: synthetic nuclei images, a gigapixel TIFF written tile by tile, and
a near-free model (a TorchScript 1x1 convolution with its card)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile
import torch
from torch import nn

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
    tifffile.imwrite(
        path,
        _cycle(pool, per_side * per_side),
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
