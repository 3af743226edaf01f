"""Helpers shared by the unit tests (imported relatively: ``from ..helpers import ...``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch import nn

from segpipe import normalize
from segpipe.chunk_inference import predict_chunks
from segpipe.io.images import ImageSource, open_image
from segpipe.models import Predictor
from segpipe.tiling import Region
from segpipe.windows import BlendWindows, ChunkWindows, TrimWindows

TINY_RADIUS = 8  # an upper bound on TinyNet's receptive-field radius (see its docstring)


class TinyNet(nn.Module):
    """A two-level fully convolutional net with one 2x2 pooling, so its size divisor is 2.

    Receptive-field radius: 1 (conv) + 1 (pool) + 2 (conv at scale 2) + 1 (upsample) + 1 (conv) = 6 <= 8.
    """

    def __init__(self, in_channels: int = 2, num_classes: int = 3) -> None:
        super().__init__()
        self.down = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.middle = nn.Conv2d(4, 4, 3, padding=1)
        self.up = nn.Upsample(scale_factor=2.0, mode="nearest")
        self.head = nn.Conv2d(8, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = torch.relu(self.down(x))
        deep = self.up(torch.relu(self.middle(self.pool(skip))))
        return self.head(torch.cat([skip, deep], dim=1))


def tiny_card(**changes: Any) -> dict[str, Any]:
    """The model card of TinyNet, as written beside its TorchScript file."""
    card: dict[str, Any] = {
        "name": "tiny",
        "in_channels": 2,
        "num_classes": 3,
        "class_names": ["a", "b", "c"],
        "size_divisor": 2,
        "halo": TINY_RADIUS,
        "normalization": "none",
    }
    card.update(changes)
    return card


def save_torchscript(module: nn.Module, path: Path, card: dict[str, Any] | None = None) -> Path:
    """``torch.jit.save`` the scripted ``module`` at ``path``; write ``card`` beside it as JSON if given."""
    torch.jit.save(torch.jit.script(module.eval()), str(path))
    if card is not None:
        path.with_suffix(".json").write_text(json.dumps(card))
    return path


def write_zarr(path: Path, data: np.ndarray, chunks: tuple[int, ...] | None = None) -> ImageSource:
    """Write ``data`` as a Zarr v3 array at ``path`` and open it as an image."""
    zarr.create_array(path, data=data, chunks=chunks or data.shape)
    return open_image(path)


def whole_image_labels(
    predictor: Predictor, image: np.ndarray, halo: int, stats: normalize.BandStats | None
) -> np.ndarray:
    """Reference labels: normalize the whole (C, H, W) image, mirror-pad it by ``halo`` (and bottom/right up
    to the model's size divisor), run the predictor once, crop the halo off, argmax."""
    _, height, width = image.shape
    divisor = predictor.card.size_divisor
    extra_y = -(height + 2 * halo) % divisor
    extra_x = -(width + 2 * halo) % divisor
    data = normalize.apply(image, stats)
    padded = np.pad(data, ((0, 0), (halo, halo + extra_y), (halo, halo + extra_x)), mode="symmetric")
    logits = predictor(padded[np.newaxis])[0]
    return logits[:, halo : halo + height, halo : halo + width].argmax(axis=0)


def trim_windows(predictor: Predictor, window: np.ndarray, halo: int, tile: int, batch_size: int | str) -> np.ndarray:
    """(K, h, w) logits of the centre of ``window`` (its halo trimmed), tile by tile.

    ``batch_size`` tiles go through each forward pass; each tile sees ``halo`` pixels of context on every side.
    """
    region = Region(0, window.shape[1] - 2 * halo, 0, window.shape[2] - 2 * halo)
    card = predictor.card
    chunk = TrimWindows(window, region, halo, tile, card.size_divisor, card.num_classes)
    return _predict_one(predictor, batch_size, chunk)


def blend_windows(
    predictor: Predictor, window: np.ndarray, region: Region, patch: int, stride: int, batch_size: int | str
) -> np.ndarray:
    """Gaussian-weighted mean of the logits of every global-grid window overlapping ``region``.

    ``window`` holds ``region`` grown by ``patch`` on each side. Memory is one chunk's logits, never the image's.
    """
    chunk = BlendWindows(window, region, patch, stride, predictor.card.num_classes)
    return _predict_one(predictor, batch_size, chunk)


def _predict_one(predictor: Predictor, batch_size: int | str, chunk: ChunkWindows) -> np.ndarray:
    for finished in predict_chunks(predictor, batch_size, [chunk], len(chunk)):
        return finished.logits()
    raise AssertionError("a chunk with no windows")  # pragma: no cover (every chunk has at least one)
