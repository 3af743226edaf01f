"""Downsampled previews: image, prediction and truth side by side in one PNG, read chunk by chunk."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from segpipe import normalize
from segpipe.io.images import ImageSource
from segpipe.reports.overlays import png_bytes
from segpipe.tiling import chunk_grid, strided_sample

PALETTE = np.array(
    [[0, 0, 0], [255, 215, 0], [0, 191, 255], [255, 64, 129], [124, 252, 0], [255, 140, 0], [186, 85, 211]],
    dtype=np.uint8,
)


def thumbnail(source: ImageSource, max_side: int, chunk: int = 1024) -> np.ndarray:
    """Every ``stride``-th pixel of band 0, as (h, w), with ``stride`` chosen to fit ``max_side``."""
    stride = max(1, -(-max(source.height, source.width) // max_side))
    out = np.zeros((-(-source.height // stride), -(-source.width // stride)), dtype=source.dtype)
    for region in chunk_grid(source.height, source.width, max(chunk, stride)):
        part = strided_sample(source.read(*region)[0], region, stride)
        y, x = -(-region.y0 // stride), -(-region.x0 // stride)
        out[y : y + part.shape[0], x : x + part.shape[1]] = part
    return out


def render_preview(
    image: ImageSource,
    prediction: ImageSource,
    truth: ImageSource | None,
    stats: normalize.BandStats | None,
    max_side: int = 512,
    class_names: Sequence[str] = (),
) -> bytes:
    """Image | prediction | truth (if any) as one palette PNG, with a legend of the class colours below.

    Panels are at most ``max_side`` high and each is titled. A palette image (``GRAY_LEVELS`` grays, the class
    colours, white, black) is a third of RGB's bytes to compress: about 5 times faster to encode, a third the size.
    """
    gray = gray_thumbnail(image, stats, max_side)
    panels = [np.rint(gray * (GRAY_LEVELS - 1)).astype(np.uint8)]
    panels.append(_colour(thumbnail(prediction, max_side)))
    titles = ["image", "prediction"]
    if truth is not None:
        panels.append(_colour(thumbnail(truth, max_side)))
        titles.append("truth")
    gap = np.full((panels[0].shape[0], GAP), WHITE, np.uint8)
    row = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
    framed = _with_titles_and_legend(row, [p.shape[1] for p in panels], titles, class_names)
    return png_bytes(framed)


GAP = 4
BAND = 18  # height of the title strip and of each legend row, in pixels
GRAY_LEVELS = 240  # palette indices 0..239: the image panel's grays (index i is gray i * 255 / 239)
CLASS_COLOURS = GRAY_LEVELS  # then PALETTE's colours, white, black and the swatches' gray outline
WHITE, BLACK, OUTLINE = (CLASS_COLOURS + len(PALETTE) + k for k in range(3))


def _palette() -> list[int]:
    """The preview's palette, flat (r, g, b, r, g, b, ...), in the index order above."""
    grays = np.rint(np.arange(GRAY_LEVELS) * 255 / (GRAY_LEVELS - 1)).astype(np.uint8)
    colours = [np.repeat(grays[:, None], 3, axis=1), PALETTE, np.array([[255] * 3, [0] * 3, [128] * 3], np.uint8)]
    return [int(v) for v in np.concatenate(colours).ravel()]


def _with_titles_and_legend(
    row: np.ndarray, widths: list[int], titles: list[str], class_names: Sequence[str]
) -> Image.Image:
    """``row`` (palette indices) on a white canvas: a title above each panel, a swatch and name per class below."""
    per_line = max(1, row.shape[1] // 110)
    legend_rows = -(-len(class_names) // per_line)
    canvas = Image.new("P", (row.shape[1], BAND + row.shape[0] + BAND * legend_rows + 2), WHITE)
    canvas.putpalette(_palette())
    canvas.paste(Image.frombytes("P", (row.shape[1], row.shape[0]), np.ascontiguousarray(row).tobytes()), (0, BAND))
    draw = ImageDraw.Draw(canvas)
    left = 0
    for title, width in zip(titles, widths, strict=True):
        draw.text((left + 2, 3), title, fill=BLACK)
        left += width + GAP
    for k, name in enumerate(class_names):
        x, y = (k % per_line) * 110 + 2, BAND + row.shape[0] + (k // per_line) * BAND + 3
        draw.rectangle((x, y, x + 11, y + 11), fill=CLASS_COLOURS + k % len(PALETTE), outline=OUTLINE)
        draw.text((x + 16, y), f"{k} {name}", fill=BLACK)
    return canvas


def gray_thumbnail(image: ImageSource, stats: normalize.BandStats | None, max_side: int) -> np.ndarray:
    """Band 0 of ``image`` downsampled to fit ``max_side``, scaled by its stats and clipped to 0..1."""
    first_band = None if stats is None else normalize.BandStats(stats.low[:1], stats.high[:1])
    scaled: np.ndarray = np.clip(normalize.apply(thumbnail(image, max_side)[None], first_band)[0], 0, 1)
    return scaled


def _colour(labels: np.ndarray) -> np.ndarray:
    """The palette index of each label's class colour."""
    return (CLASS_COLOURS + np.asarray(labels, dtype=np.int64) % len(PALETTE)).astype(np.uint8)
