"""A batch's most uncertain regions (``--save-uncertainty``): the chunks with the highest mean softmax entropy.

A region is one chunk of an image's ``uncertainty`` array. The caller measures each chunk as it reads it
(``region_figures``) and ``most_uncertain`` keeps the ``n`` highest, so no image is ever held whole. Each kept region
gets a picture ``uncertain_<rank>_<name>.png``: the region's image beside the same image tinted by its entropy,
with a colour bar in nats.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from segpipe.reports.overlays import png_bytes
from segpipe.reports.tables import column_name
from segpipe.tiling import Region
from segpipe.uncertainty import UNCERTAIN_NATS

HOT = np.array([255, 40, 0], np.float32)  # the tint of the most uncertain pixels


@dataclass(frozen=True)
class UncertainRegion:
    """One chunk of an image and its figures: mean entropy (nats) and the share of its pixels above the threshold."""

    image: str
    region: Region
    mean_uncertainty: float
    uncertain_fraction: float

    @property
    def extent(self) -> str:
        """The region in pixels of level 0, ``y 0..256, x 256..512``."""
        r = self.region
        return f"y {r.y0}..{r.y1}, x {r.x0}..{r.x1}"


def region_figures(image: str, region: Region, values: np.ndarray) -> UncertainRegion:
    """The figures of ``region`` of ``image`` from its (h, w) entropies ``values``."""
    values = np.asarray(values, np.float32)
    mean = float(values.mean(dtype=np.float64)) if values.size else 0.0
    share = float(np.count_nonzero(values > UNCERTAIN_NATS) / values.size) if values.size else 0.0
    return UncertainRegion(image, region, mean, share)


def most_uncertain(regions: Iterable[UncertainRegion], n: int) -> list[UncertainRegion]:
    """The ``n`` regions of highest mean entropy, highest first (ties: image name, then position); streams."""
    return sorted(heapq.nsmallest(n, regions, key=_order), key=_order)


def _order(region: UncertainRegion) -> tuple[float, str, int, int]:
    return (-region.mean_uncertainty, region.image, region.region.y0, region.region.x0)


def uncertain_name(rank: int, region: UncertainRegion) -> str:
    """The picture's file name: ``uncertain_<rank>_<name>.png``."""
    return f"uncertain_{rank}_{column_name(region.image)}.png"


def heat(image: np.ndarray, values: np.ndarray, max_nats: float) -> np.ndarray:
    """(h, w, 3) uint8: grey ``image`` (0..1) tinted towards red by entropy, fully at ``max_nats``."""
    grey = np.clip(np.nan_to_num(np.asarray(image, np.float32)), 0.0, 1.0) * 255
    weight = np.clip(np.asarray(values, np.float32) / max(max_nats, 1e-6), 0.0, 1.0)[..., None] * 0.8
    out = (1 - weight) * grey[..., None] + weight * HOT
    return np.asarray(out.round().astype(np.uint8))


def uncertain_png(image: np.ndarray, values: np.ndarray, title: str, max_nats: float) -> bytes:
    """Image | image tinted by entropy, enlarged (nearest) towards 256 pixels along its longer side, with a colour bar.

    Args:
        image: the region's band 0, (h, w), scaled to 0..1.
        values: its entropies in nats, (h, w).
        title: the line above the colour bar.
        max_nats: the entropy shown fully red (``log K`` for K classes).
    """
    if np.shape(image) != np.shape(values):
        raise ValueError(f"image {np.shape(image)} and uncertainty {np.shape(values)} differ in shape")
    grey = (np.clip(np.nan_to_num(np.asarray(image, np.float32)), 0.0, 1.0) * 255).round().astype(np.uint8)
    panels = [np.repeat(grey[..., None], 3, axis=2), heat(image, values, max_nats)]
    gap = np.full((grey.shape[0], 2, 3), 255, np.uint8)
    row = np.concatenate([panels[0], gap, panels[1]], axis=1)
    scale = max(1, min(8, math.ceil(256 / max(1, *grey.shape))))
    picture = Image.fromarray(row).resize((row.shape[1] * scale, row.shape[0] * scale), Image.Resampling.NEAREST)
    return png_bytes(_with_colour_bar(picture, title, max_nats))


def _with_colour_bar(picture: Image.Image, title: str, max_nats: float) -> Image.Image:
    font = ImageFont.load_default(size=12)
    canvas = Image.new("RGB", (max(picture.width, 420), picture.height + 40), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = picture.height + 3
    draw.text((4, y), title, fill=(0, 0, 0), font=font)
    y += 18
    bar = heat(np.full((1, 120), 0.5), np.linspace(0, max_nats, 120)[None], max_nats)[0]
    for x, colour in enumerate(bar):
        draw.line((4 + x, y + 2, 4 + x, y + 12), fill=tuple(int(c) for c in colour))
    label = f"entropy 0 .. {max_nats:.2f} nats (uncertain above {UNCERTAIN_NATS})"
    draw.text((130, y), label, fill=(0, 0, 0), font=font)
    return canvas


def uncertain_overlays(
    regions: Sequence[UncertainRegion],
    load: Callable[[UncertainRegion], tuple[np.ndarray, np.ndarray]],
    max_nats: float,
) -> dict[str, bytes]:
    """PNG bytes by file name ``uncertain_<rank>_<name>.png`` for ``regions`` in their order (rank 1 first).

    ``load(region)`` returns the region's image (0..1) and entropies, both (h, w).
    """
    files = {}
    for rank, region in enumerate(regions, start=1):
        image, values = load(region)
        title = (
            f"#{rank} {region.image} ({region.extent}): mean uncertainty {region.mean_uncertainty:.3f} nats, "
            f"{region.uncertain_fraction:.1%} uncertain"
        )
        files[uncertain_name(rank, region)] = uncertain_png(image, values, title, max_nats)
    return files
