"""Report plots: the confusion heatmap (``confusion.png``) and per-class IoU and Dice bars (``class_scores.png``).

Matplotlib is used through ``Figure`` and the Agg canvas directly (no pyplot, no global backend state), so
plots render headless and from worker threads.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segpipe import metrics
from segpipe.reports.tables import class_columns, write_file

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
    side = min(4.0 + 0.9 * k, 24.0)
    from matplotlib.figure import Figure  # on use: a run without truths draws no plot

    fig = Figure(figsize=(side + 1.2, side), dpi=100)
    ax = fig.add_subplot()
    ax.set_facecolor("#d9d9d9")
    image = ax.imshow(np.ma.masked_invalid(share), cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the truth row")
    if k <= 20:
        for t in range(k):
            for p in range(k):
                dark = not np.isnan(share[t, p]) and share[t, p] > 0.5
                label = _count(counts[t, p]) + ("" if np.isnan(share[t, p]) else f"\n{share[t, p]:.1%}")
                ax.text(p, t, label, ha="center", va="center", fontsize=8, color="white" if dark else "black")
    _class_ticks(ax, class_names, tilt=k > 4)
    ax.set_yticks(range(k), labels=list(class_names))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("truth class")
    ax.set_title(f"Confusion matrix ({_count(int(counts.sum()))} pixels)")
    return _png(fig)


def plot_confusion(path: str | Path, confusion: np.ndarray, class_names: Sequence[str]) -> Path:
    """Write ``confusion_png`` to ``path``."""
    return write_file(path, confusion_png(confusion, class_names))


def _class_ticks(ax: Any, class_names: Sequence[str], tilt: bool) -> None:
    ax.set_xticks(
        range(len(class_names)), labels=list(class_names), rotation=45 if tilt else 0, ha="right" if tilt else "center"
    )


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
    k = len(class_names)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(3.0 + 1.1 * k, 24.0), 4.5), dpi=100)
    ax = fig.add_subplot()
    x = np.arange(k)
    for offset, key, colour in ((-0.2, "iou", "#4c72b0"), (0.2, "dice", "#dd8452")):
        values = np.array(getattr(scores, key), dtype=np.float64)
        label = "IoU" if key == "iou" else "Dice"
        bars = ax.bar(x + offset, np.nan_to_num(values), width=0.4, color=colour, label=label)
        for bar, value in zip(bars, values, strict=True):
            text = "n/a" if np.isnan(value) else f"{value:.3f}"
            centre = bar.get_x() + bar.get_width() / 2
            ax.text(centre, bar.get_height() + 0.01, text, ha="center", va="bottom", fontsize=7)
        mean = getattr(scores, f"mean_{key}")
        if not np.isnan(mean):
            ax.axhline(mean, color=colour, linestyle="--", linewidth=1, label=f"mean {label}: {mean:.3f}")
    _class_ticks(ax, class_names, tilt=k > 6)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("score")
    ax.set_title("IoU and Dice per class")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1 if k <= 6 else -0.25), ncols=4, fontsize=8, frameon=False)
    return _png(fig)


def plot_class_scores(path: str | Path, scores: metrics.Scores, class_names: Sequence[str]) -> Path:
    """Write ``class_scores_png`` to ``path``."""
    return write_file(path, class_scores_png(scores, class_names))


def _png(fig: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
