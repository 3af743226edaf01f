"""Report overlays of one image and of a batch's worst images.

An overlay is an image tinted by outcome (TP, FP, FN, wrong class) with its truth outlined, as a PNG with a legend; the
overlays of a batch's worst images are named ``worst_<rank>_<name>.png``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from segpipe.errors import InputError
from segpipe.metrics import defined
from segpipe.reports.tables import ImageResult, column_name, worst_images, write_file

Thumbnails = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(image float 0..1, prediction labels, truth labels), all (h, w); the image may be (h, w, 3)."""

OVERLAY_COLOURS: dict[str, tuple[int, int, int]] = {
    "TP": (0, 200, 0),
    "FP": (230, 0, 0),
    "FN": (0, 90, 255),
    "wrong class": (255, 150, 0),
}


def overlay(
    image: np.ndarray, prediction: np.ndarray, truth: np.ndarray, ignore_index: int | None = None, alpha: float = 0.45
) -> np.ndarray:
    """(h, w, 3) uint8: the grey image tinted by outcome, with its truth outlined.

    It is tinted where prediction or truth is foreground (label > 0): TP green (same class), FP red (predicted on
    background), FN blue (missed), wrong class orange; truth outlines white. Pixels whose truth is ``ignore_index`` are
    left untinted.
    """
    base = _grey_rgb(image)
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    if not base.shape[:2] == prediction.shape == truth.shape:
        raise InputError(
            f"overlay needs equal shapes: image {base.shape[:2]}, prediction {prediction.shape}, truth {truth.shape}"
        )
    out = base.astype(np.float32)
    for name, mask in _outcomes(prediction, truth, ignore_index).items():
        out[mask] = (1 - alpha) * out[mask] + alpha * np.array(OVERLAY_COLOURS[name], np.float32)
    valid = truth != ignore_index if ignore_index is not None else np.ones(truth.shape, bool)
    foreground = (truth > 0) & valid
    out[foreground & ~ndimage.binary_erosion(foreground, border_value=1)] = 255.0
    return out.round().astype(np.uint8)


def _grey_rgb(image: np.ndarray) -> np.ndarray:
    image = np.nan_to_num(np.asarray(image, dtype=np.float32))
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"overlay image must be (h, w) or (h, w, 3), got {image.shape}")
    return np.asarray((np.clip(image, 0.0, 1.0) * 255).astype(np.uint8))


def _outcomes(prediction: np.ndarray, truth: np.ndarray, ignore_index: int | None) -> dict[str, np.ndarray]:
    valid = truth != ignore_index if ignore_index is not None else np.ones(truth.shape, bool)
    predicted, present = (prediction > 0) & valid, (truth > 0) & valid
    return {
        "TP": predicted & present & (prediction == truth),
        "FP": predicted & ~present,
        "FN": present & ~predicted,
        "wrong class": predicted & present & (prediction != truth),
    }


def overlay_png(
    image: np.ndarray, prediction: np.ndarray, truth: np.ndarray, title: str = "", ignore_index: int | None = None
) -> bytes:
    """``overlay`` as RGB PNG bytes, enlarged (nearest) to at least 256 pixels a side.

    A legend strip gives each outcome's share of the pixels and an optional title.
    """
    rgb = overlay(image, prediction, truth, ignore_index)
    scale = max(1, min(8, math.ceil(256 / max(1, min(rgb.shape[:2])))))
    size = (rgb.shape[1] * scale, rgb.shape[0] * scale)
    picture = Image.fromarray(rgb).resize(size, Image.Resampling.NEAREST)
    outcomes = _outcomes(np.asarray(prediction), np.asarray(truth), ignore_index)
    shares = {name: float(mask.mean()) for name, mask in outcomes.items()}
    return png_bytes(_with_legend(picture, shares, title))


PNG_LEVEL = 1  # zlib level: the same pixels in under a third of the default 6's time, for about 1 % more bytes


def png_bytes(picture: Image.Image) -> bytes:
    """``picture`` as PNG (lossless at any level) at ``PNG_LEVEL``."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=PNG_LEVEL)
    return buffer.getvalue()


def write_overlay(
    path: str | Path,
    image: np.ndarray,
    prediction: np.ndarray,
    truth: np.ndarray,
    title: str = "",
    ignore_index: int | None = None,
) -> Path:
    """Write ``overlay_png`` to ``path``."""
    return write_file(path, overlay_png(image, prediction, truth, title, ignore_index))


def _with_legend(picture: Image.Image, shares: dict[str, float], title: str) -> Image.Image:
    font = ImageFont.load_default(size=12)
    lines = ([title] if title else []) + [""]
    height = 18 * len(lines) + 4
    canvas = Image.new("RGB", (max(picture.width, 500), picture.height + height), (255, 255, 255))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = picture.height + 3
    if title:
        draw.text((4, y), title, fill=(0, 0, 0), font=font)
        y += 18
    x = 4
    for name, share in shares.items():
        draw.rectangle((x, y + 2, x + 10, y + 12), fill=OVERLAY_COLOURS[name])
        label = f"{name} {share:.1%}"
        draw.text((x + 14, y), label, fill=(0, 0, 0), font=font)
        x += 22 + int(draw.textlength(label, font=font))
    draw.rectangle((x, y + 2, x + 10, y + 12), outline=(0, 0, 0), fill=(255, 255, 255))
    draw.text((x + 14, y), "truth outline", fill=(0, 0, 0), font=font)
    return canvas


def worst_overlays(
    results: Sequence[ImageResult],
    load: Callable[[str], Thumbnails],
    n: int = 4,
    ignore_index: int | None = None,
) -> dict[str, bytes]:
    """PNG bytes by file name ``worst_<rank>_<name>.png``, worst first.

    They are for the ``n`` images with the lowest mean Dice; ``load(name)`` returns that image's thumbnails.
    """
    files = {}
    for rank, result in enumerate(worst_images(results, n), start=1):
        image, prediction, truth = load(result.name)
        dice = defined(result.resolved_scores().mean_dice)
        title = f"#{rank} {result.name}: mean Dice {'-' if dice is None else f'{dice:.3f}'}"
        leaf = f"worst_{rank}_{column_name(result.name)}.png"
        files[leaf] = overlay_png(image, prediction, truth, title, ignore_index)
    return files


def write_worst_overlays(
    directory: str | Path,
    results: Sequence[ImageResult],
    load: Callable[[str], Thumbnails],
    n: int = 4,
    ignore_index: int | None = None,
) -> list[Path]:
    """Write ``worst_overlays`` into ``directory``; returns their paths, worst first."""
    files = worst_overlays(results, load, n, ignore_index)
    return [write_file(Path(directory) / leaf, data) for leaf, data in files.items()]
