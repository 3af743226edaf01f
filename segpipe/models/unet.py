"""A small U-Net in plain torch.

It is fully convolutional, so any tile size that is a multiple of ``size_divisor`` works, and a pixel's output depends
only on inputs within ``receptive_field_radius``.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with ``depth`` resolution levels and ``base`` channels at full resolution.

    Args:
        in_channels: image bands.
        num_classes: output logit channels.
        base: channels at level 0; doubled at every level down.
        depth: resolution levels (``depth - 1`` poolings).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, base: int = 16, depth: int = 3) -> None:
        """Build the encoder levels, their upsamplers and decoders, and the 1x1 logit head."""
        super().__init__()
        widths = [base * 2**level for level in range(depth)]
        self.encoders = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoders.append(_conv_block(previous, width))
            previous = width
        self.pool = nn.MaxPool2d(2)
        self.upsamplers = nn.ModuleList(
            nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2) for level in range(depth - 1)
        )
        self.decoders = nn.ModuleList(_conv_block(2 * widths[level], widths[level]) for level in range(depth - 1))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.depth = depth

    @property
    def size_divisor(self) -> int:
        """Tile edges must be multiples of this (one halving per pooling)."""
        return int(2 ** (self.depth - 1))

    @property
    def receptive_field_radius(self) -> int:
        """Pixels of context each side that can change one output pixel.

        At level ``l`` (scale ``s = 2**l``) each 3x3 conv adds ``s``; each 2x2 pool and each 2x2 transposed
        conv adds at most ``s``. Encoder: 2 convs per level; decoder: 2 convs per level above the bottom.
        """
        radius = 0
        for level in range(self.depth):
            scale = 2**level
            radius += 2 * scale  # encoder convs
            if level < self.depth - 1:
                radius += scale  # pool down from this level
                radius += scale  # transposed conv up to this level
                radius += 2 * scale  # decoder convs
        return radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, h, w) -> (B, num_classes, h, w) logits; h and w multiples of ``size_divisor``."""
        skips = []
        for level, encoder in enumerate(self.encoders):
            x = encoder(x)
            if level < self.depth - 1:
                skips.append(x)
                x = self.pool(x)
        for level in reversed(range(self.depth - 1)):
            x = self.upsamplers[level](x)
            x = self.decoders[level](torch.cat([skips[level], x], dim=1))
        return torch.as_tensor(self.head(x))
