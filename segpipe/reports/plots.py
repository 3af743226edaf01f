"""Report plots: the confusion heatmap (``confusion.png``) and per-class IoU and Dice bars (``class_scores.png``).

Drawn with Pillow, as the previews and overlays are: two small charts do not need a plotting library, and
matplotlib's import and layout cost a small run about a second.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from segpipe import metrics
from segpipe.reports.tables import class_columns, write_file

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
BLACK, WHITE, GREY, AXIS = (0, 0, 0), (255, 255, 255), (217, 217, 217), (90, 90, 90)
BLUES = np.array([(247, 251, 255), (198, 219, 239), (107, 174, 214), (33, 113, 181), (8, 48, 107)], np.float64)
IOU_COLOUR, DICE_COLOUR = (76, 114, 176), (221, 132, 82)
CELL, MARGIN, TEXT = 72, 24, 12  # heatmap cell edge, outer margin, text size (pixels)
BAR_GROUP, BAR_HEIGHT = 96, 300  # per-class width and the height of 1.0 in the bar chart
LABELLED_CELLS = 20  # a larger matrix is drawn without per-cell text


@cache
def _font(size: int = TEXT) -> Font:
    return ImageFont.load_default(size=size)


def blues(share: float) -> tuple[int, int, int]:
    """A colour from white (0) to dark blue (1), like matplotlib's ``Blues``."""
    position = min(max(share, 0.0), 1.0) * (len(BLUES) - 1)
    low = int(np.floor(position))
    high = min(low + 1, len(BLUES) - 1)
    colour = BLUES[low] + (BLUES[high] - BLUES[low]) * (position - low)
    return int(round(colour[0])), int(round(colour[1])), int(round(colour[2]))


def confusion_png(confusion: np.ndarray, class_names: Sequence[str]) -> bytes:
    """PNG heatmap of the confusion matrix normalised by truth rows.

    Each cell is annotated with its pixel count and row share; a row without truth pixels is grey.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    class_columns(class_names, counts.shape[0])
    rows = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(rows > 0, counts / rows, np.nan)
    k = counts.shape[0]
    names = [str(name) for name in class_names]
    left = MARGIN + max(_width(name) for name in [*names, "truth"]) + 2 * TEXT
    top = MARGIN + 3 * TEXT
    bottom_labels = max(_width(name) for name in names) if k > 4 else TEXT
    width, height = left + k * CELL + 140, top + k * CELL + bottom_labels + 4 * TEXT + MARGIN
    canvas = Image.new("RGB", (max(width, 420), max(height, 320)), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.text((left, MARGIN), f"Confusion matrix ({_count(int(counts.sum()))} pixels)", fill=BLACK, font=_font(14))
    for t in range(k):
        for p in range(k):
            _cell(draw, (left + p * CELL, top + t * CELL), counts[t, p], share[t, p], labelled=k <= LABELLED_CELLS)
    for i, name in enumerate(names):
        y = top + i * CELL + CELL // 2
        draw.text((left - 6, y), name, fill=BLACK, font=_font(), anchor="rm")
        _column_label(canvas, name, (left + i * CELL + CELL // 2, top + k * CELL + 4), tilted=k > 4)
    draw.text((left + k * CELL // 2, height - MARGIN), "predicted class", fill=BLACK, font=_font(), anchor="md")
    _vertical_text(canvas, "truth class", (MARGIN, top + k * CELL // 2))
    _colour_bar(draw, (left + k * CELL + 24, top), k * CELL)
    return _png(canvas)


def _cell(draw: ImageDraw.ImageDraw, corner: tuple[int, int], count: int, share: float, labelled: bool) -> None:
    x, y = corner
    missing = bool(np.isnan(share))
    draw.rectangle((x, y, x + CELL - 1, y + CELL - 1), fill=GREY if missing else blues(share))
    if labelled:
        label = _count(int(count)) + ("" if missing else f"\n{share:.1%}")
        colour = WHITE if not missing and share > 0.5 else BLACK
        centre = (x + CELL // 2, y + CELL // 2)
        draw.multiline_text(centre, label, fill=colour, font=_font(), anchor="mm", align="center")


def _colour_bar(draw: ImageDraw.ImageDraw, corner: tuple[int, int], height: int) -> None:
    x, y = corner
    for row in range(height):
        draw.line((x, y + row, x + 16, y + row), fill=blues(1.0 - row / max(height - 1, 1)))
    draw.rectangle((x, y, x + 16, y + height - 1), outline=AXIS)
    for value in (0.0, 0.5, 1.0):
        tick = (x + 22, y + round((1.0 - value) * (height - 1)))
        draw.text(tick, f"{value:.1f}", fill=BLACK, font=_font(), anchor="lm")


def plot_confusion(path: str | Path, confusion: np.ndarray, class_names: Sequence[str]) -> Path:
    """Write ``confusion_png`` to ``path``."""
    return write_file(path, confusion_png(confusion, class_names))


def _count(value: int) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return str(int(value))


def class_scores_png(scores: metrics.Scores, class_names: Sequence[str]) -> bytes:
    """PNG of grouped bars of IoU and Dice per class.

    Values are written on the bars, mean IoU and Dice drawn as dashed lines; a class without a score is marked n/a.
    """
    class_columns(class_names, len(scores.iou))
    names = [str(name) for name in class_names]
    k = len(names)
    left, top = MARGIN + 4 * TEXT, MARGIN + 4 * TEXT
    bottom_labels = max(_width(name) for name in names) if k > 6 else TEXT
    width, height = left + k * BAR_GROUP + MARGIN, top + BAR_HEIGHT + bottom_labels + 5 * TEXT + MARGIN
    canvas = Image.new("RGB", (max(width, 480), height), WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.text((left, MARGIN), "IoU and Dice per class", fill=BLACK, font=_font(14))
    base = top + BAR_HEIGHT
    _score_axis(draw, left, top, k)
    legend: list[tuple[str, tuple[int, int, int]]] = []
    for offset, key, colour in ((0.1, "iou", IOU_COLOUR), (0.5, "dice", DICE_COLOUR)):
        label = "IoU" if key == "iou" else "Dice"
        legend.append((label, colour))
        for i, value in enumerate(np.array(getattr(scores, key), dtype=np.float64)):
            _bar(draw, left + int((i + offset) * BAR_GROUP), base, float(value), colour)
        mean = float(getattr(scores, f"mean_{key}"))
        if not np.isnan(mean):
            _dashed(draw, (left, base - round(mean * BAR_HEIGHT)), k * BAR_GROUP, colour)
            legend.append((f"mean {label}: {mean:.3f}", colour))
    for i, name in enumerate(names):
        _column_label(canvas, name, (left + i * BAR_GROUP + BAR_GROUP // 2, base + 4), tilted=k > 6)
    _legend(draw, legend, (left, base + bottom_labels + 2 * TEXT))
    return _png(canvas)


def _score_axis(draw: ImageDraw.ImageDraw, left: int, top: int, k: int) -> None:
    base = top + BAR_HEIGHT
    draw.line((left, top - TEXT, left, base), fill=AXIS)
    draw.line((left, base, left + k * BAR_GROUP, base), fill=AXIS)
    for tick in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        y = base - round(tick * BAR_HEIGHT)
        draw.line((left - 4, y, left, y), fill=AXIS)
        draw.text((left - 6, y), f"{tick:.1f}", fill=BLACK, font=_font(), anchor="rm")


def _bar(draw: ImageDraw.ImageDraw, x: int, base: int, value: float, colour: tuple[int, int, int]) -> None:
    width = int(0.4 * BAR_GROUP)
    if np.isnan(value):
        draw.text((x + width // 2, base - 2), "n/a", fill=BLACK, font=_font(10), anchor="md")
        return
    top = base - round(min(max(value, 0.0), 1.0) * BAR_HEIGHT)
    draw.rectangle((x, top, x + width - 1, base), fill=colour)
    draw.text((x + width // 2, top - 2), f"{value:.3f}", fill=BLACK, font=_font(10), anchor="md")


def _dashed(draw: ImageDraw.ImageDraw, start: tuple[int, int], length: int, colour: tuple[int, int, int]) -> None:
    x, y = start
    for dash in range(x, x + length, 10):
        draw.line((dash, y, min(dash + 5, x + length), y), fill=colour, width=1)


Colour = tuple[int, int, int]


def _legend(draw: ImageDraw.ImageDraw, entries: list[tuple[str, Colour]], corner: tuple[int, int]) -> None:
    x, y = corner
    for label, colour in entries:
        draw.rectangle((x, y - 5, x + 12, y + 5), fill=colour)
        draw.text((x + 16, y), label, fill=BLACK, font=_font(), anchor="lm")
        x += 32 + _width(label)


def plot_class_scores(path: str | Path, scores: metrics.Scores, class_names: Sequence[str]) -> Path:
    """Write ``class_scores_png`` to ``path``."""
    return write_file(path, class_scores_png(scores, class_names))


def _width(text: str) -> int:
    left, _, right, _ = _font().getbbox(text)
    return int(right - left)


def _column_label(canvas: Image.Image, text: str, top_centre: tuple[int, int], tilted: bool) -> None:
    """A class name under its column, written downwards at 45 degrees where names would collide."""
    x, y = top_centre
    if not tilted:
        ImageDraw.Draw(canvas).text((x, y), text, fill=BLACK, font=_font(), anchor="ma")
        return
    label = _text_image(text).rotate(45, expand=True, fillcolor=WHITE)
    canvas.paste(label, (x - label.width, y))


def _vertical_text(canvas: Image.Image, text: str, left_centre: tuple[int, int]) -> None:
    label = _text_image(text).rotate(90, expand=True, fillcolor=WHITE)
    canvas.paste(label, (left_centre[0], left_centre[1] - label.height // 2))


def _text_image(text: str) -> Image.Image:
    image = Image.new("RGB", (_width(text) + 4, TEXT + 6), WHITE)
    ImageDraw.Draw(image).text((2, 1), text, fill=BLACK, font=_font())
    return image


def _png(canvas: Image.Image) -> bytes:
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()
