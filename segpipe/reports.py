"""Reports from per-image results: CSV and JSON tables, a confusion heatmap, per-class bars, overlays of the
worst images, and a plain-text comparison of runs. Pure: nothing here imports MLflow, Prefect or Dask.

Matplotlib is used through ``Figure`` and the Agg canvas directly (no pyplot, no global backend state), so
plots render headless and from worker threads. CSV cells for undefined scores (NaN) are empty; JSON has null.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from segpipe import metrics
from segpipe.errors import InputError, OutputError
from segpipe.objects import sum_object_metrics

Thumbnails = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(image float 0..1, prediction labels, truth labels), all (h, w); the image may be (h, w, 3)."""

OVERLAY_COLOURS: dict[str, tuple[int, int, int]] = {
    "TP": (0, 200, 0),
    "FP": (230, 0, 0),
    "FN": (0, 90, 255),
    "wrong class": (255, 150, 0),
}
OBJECT_COLUMNS = ("tp", "fp", "fn", "precision", "recall", "f1", "mean_matched_iou")
SUMMARY_COLUMNS = (
    "class",
    "truth_pixels",
    "predicted_pixels",
    "images_scored",
    "iou",
    "dice",
    "precision",
    "recall",
    "per_image_iou",
    "per_image_dice",
    "per_image_precision",
    "per_image_recall",
)


@dataclass(frozen=True)
class ImageResult:
    """One image's evaluation: its confusion matrix, its scores (computed from the matrix when None) and,
    optionally, its object metrics (``segpipe.objects.object_metrics``)."""

    name: str
    confusion: np.ndarray
    scores: metrics.Scores | None = None
    objects: list[dict[str, Any]] | None = None

    def resolved_scores(self) -> metrics.Scores:
        return self.scores if self.scores is not None else metrics.scores(self.confusion)


@dataclass(frozen=True)
class ScoreSummary:
    """A batch's scores: ``micro`` (summed matrices) and ``per_image`` (means over images) aggregates, summed
    object metrics (None without any), and the images from worst to best by mean Dice."""

    class_names: tuple[str, ...]
    aggregates: metrics.BatchAggregates
    objects: list[dict[str, Any]] | None
    worst_by_mean_dice: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The form of ``summary.json``, NaN as null."""
        return {
            "classes": list(self.class_names),
            "images": self.aggregates.images,
            "micro": self.aggregates.micro.to_json(),
            "per_image": self.aggregates.per_image.to_json(),
            "objects": metrics.finite_or_none(self.objects),
            "worst_by_mean_dice": list(self.worst_by_mean_dice),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoreSummary:
        aggregates = metrics.BatchAggregates(
            metrics.Scores.from_json(data["micro"]),
            metrics.PerImageScores.from_json(data["per_image"]),
            int(data["images"]),
        )
        return cls(tuple(data["classes"]), aggregates, data["objects"], tuple(data["worst_by_mean_dice"]))


def column_name(class_name: str) -> str:
    """A class name as a CSV column suffix: lower case, runs of other characters replaced by ``_``."""
    return re.sub(r"[^0-9a-z]+", "_", class_name.lower()).strip("_") or "class"


def _class_columns(class_names: Sequence[str], num_classes: int) -> list[str]:
    if len(class_names) != num_classes:
        raise InputError(f"{len(class_names)} class names given for {num_classes} classes")
    columns = [column_name(n) for n in class_names]
    if len(set(columns)) != len(columns):
        raise InputError(f"class names {list(class_names)} collide as column names {columns}")
    return columns


# ----------------------------------------------------------------------------------------------- tables


def per_image_rows(results: Sequence[ImageResult], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per image: name, per-class iou/dice/precision/recall, means, pixels (and object metrics at
    IoU 0.5 plus F1 averaged over thresholds, when any image has them)."""
    with_objects = any(r.objects for r in results)
    rows = []
    for result in results:
        scores = result.resolved_scores()
        columns = _class_columns(class_names, len(scores.iou))
        row: dict[str, Any] = {"image": result.name}
        for metric in metrics.PER_CLASS:
            row.update({f"{metric}_{c}": v for c, v in zip(columns, getattr(scores, metric), strict=True)})
        row.update({key: getattr(scores, key) for key in metrics.MEANS})
        row["pixels"] = scores.pixels
        if with_objects:
            row.update(_object_cells(result.objects))
        rows.append(row)
    return rows


def _object_cells(objects: list[dict[str, Any]] | None) -> dict[str, Any]:
    first = next((r for r in objects or [] if r["threshold"] == 0.5), None)
    cells = {f"object_{key}": first[key] if first else math.nan for key in OBJECT_COLUMNS}
    f1 = [r["f1"] for r in objects or []]
    cells["object_f1_mean"] = float(np.mean(f1)) if f1 else math.nan
    return cells


def write_per_image_csv(path: str | Path, results: Sequence[ImageResult], class_names: Sequence[str]) -> Path:
    """Write ``per_image_rows`` as CSV (NaN as an empty cell)."""
    rows = per_image_rows(results, class_names)
    if not rows:
        raise InputError("no image results to write")
    with _atomic(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return Path(path)


def score_summary(results: Sequence[ImageResult], class_names: Sequence[str]) -> ScoreSummary:
    """Batch scores: ``micro`` (summed matrices), ``per_image`` (means over images), summed object metrics,
    and the images from worst to best by mean Dice."""
    aggregates = metrics.batch_aggregates([r.confusion for r in results])
    _class_columns(class_names, len(aggregates.micro.iou))
    objects = [r.objects for r in results if r.objects]
    return ScoreSummary(
        tuple(class_names),
        aggregates,
        sum_object_metrics(objects) if objects else None,
        tuple(r.name for r in worst_images(results, len(results))),
    )


def summary_rows(summary: ScoreSummary) -> list[dict[str, Any]]:
    """One row per class (micro scores, then per-image means) and a last row of macro means."""
    micro, per_image = summary.aggregates.micro, summary.aggregates.per_image
    rows = []
    for k, name in enumerate(summary.class_names):
        row: dict[str, Any] = {
            "class": name,
            "truth_pixels": micro.truth_pixels[k],
            "predicted_pixels": micro.predicted_pixels[k],
            "images_scored": per_image.images_per_class[k],
        }
        row.update({m: getattr(micro, m)[k] for m in metrics.PER_CLASS})
        row.update({f"per_image_{m}": getattr(per_image, m)[k] for m in metrics.PER_CLASS})
        rows.append(row)
    total = micro.pixels
    mean: dict[str, Any] = {
        "class": "mean",
        "truth_pixels": total,
        "predicted_pixels": total,
        "images_scored": summary.aggregates.images,
    }
    mean.update({m: getattr(micro, f"mean_{m}") for m in metrics.PER_CLASS})
    mean.update({f"per_image_{m}": getattr(per_image, f"mean_{m}") for m in metrics.PER_CLASS})
    return [*rows, mean]


def write_summary_csv(path: str | Path, summary: ScoreSummary) -> Path:
    """Write ``summary_rows`` as CSV."""
    with _atomic(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(SUMMARY_COLUMNS))
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in summary_rows(summary))
    return Path(path)


def write_summary_json(path: str | Path, summary: ScoreSummary) -> Path:
    """Write the summary as JSON, NaN as null."""
    with _atomic(path) as handle:
        json.dump(summary.to_json(), handle, indent=2, allow_nan=False)
    return Path(path)


def _cell(value: Any) -> Any:
    return "" if isinstance(value, float) and math.isnan(value) else value


@contextmanager
def _atomic(path: str | Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open ``path.tmp`` for writing and move it over ``path`` once complete."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, mode, newline="" if "b" not in mode else None) as handle:
            yield handle
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ----------------------------------------------------------------------------------------------- plots


def plot_confusion(path: str | Path, confusion: np.ndarray, class_names: Sequence[str]) -> Path:
    """Heatmap of the confusion matrix normalised by truth rows, each cell annotated with its pixel count and
    row share; a row without truth pixels is grey."""
    counts = np.asarray(confusion, dtype=np.int64)
    _class_columns(class_names, counts.shape[0])
    rows = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(rows > 0, counts / rows, np.nan)
    k = counts.shape[0]
    side = min(4.0 + 0.9 * k, 24.0)
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
    return _save(fig, path)


def _class_ticks(ax: Any, class_names: Sequence[str], tilt: bool) -> None:
    ax.set_xticks(
        range(len(class_names)), labels=list(class_names), rotation=45 if tilt else 0, ha="right" if tilt else "center"
    )


def _count(value: int) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return str(int(value))


def plot_class_scores(path: str | Path, scores: metrics.Scores, class_names: Sequence[str]) -> Path:
    """Grouped bars of IoU and Dice per class, values written on the bars, mean IoU and Dice as dashed lines;
    a class without a score is marked n/a."""
    _class_columns(class_names, len(scores.iou))
    k = len(class_names)
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
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    with _atomic(path, "wb") as handle:
        fig.savefig(handle, format="png")
    return Path(path)


# ----------------------------------------------------------------------------------------------- overlays


def overlay(
    image: np.ndarray, prediction: np.ndarray, truth: np.ndarray, ignore_index: int | None = None, alpha: float = 0.45
) -> np.ndarray:
    """(h, w, 3) uint8: the grey image tinted where prediction or truth is foreground (label > 0): TP green
    (same class), FP red (predicted on background), FN blue (missed), wrong class orange; truth outlines
    white. Pixels whose truth is ``ignore_index`` are left untinted."""
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
    return (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)


def _outcomes(prediction: np.ndarray, truth: np.ndarray, ignore_index: int | None) -> dict[str, np.ndarray]:
    valid = truth != ignore_index if ignore_index is not None else np.ones(truth.shape, bool)
    predicted, present = (prediction > 0) & valid, (truth > 0) & valid
    return {
        "TP": predicted & present & (prediction == truth),
        "FP": predicted & ~present,
        "FN": present & ~predicted,
        "wrong class": predicted & present & (prediction != truth),
    }


def write_overlay(
    path: str | Path,
    image: np.ndarray,
    prediction: np.ndarray,
    truth: np.ndarray,
    title: str = "",
    ignore_index: int | None = None,
) -> Path:
    """Save ``overlay`` as an RGB PNG, enlarged (nearest) to at least 256 pixels a side, with a legend strip
    giving each outcome's share of the pixels and an optional title."""
    rgb = overlay(image, prediction, truth, ignore_index)
    scale = max(1, min(8, math.ceil(256 / max(1, min(rgb.shape[:2])))))
    size = (rgb.shape[1] * scale, rgb.shape[0] * scale)
    picture = Image.fromarray(rgb).resize(size, Image.Resampling.NEAREST)
    outcomes = _outcomes(np.asarray(prediction), np.asarray(truth), ignore_index)
    shares = {name: float(mask.mean()) for name, mask in outcomes.items()}
    canvas = _with_legend(picture, shares, title)
    with _atomic(path, "wb") as handle:
        canvas.save(handle, format="PNG")
    return Path(path)


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


def worst_images(results: Sequence[ImageResult], n: int, key: str = "mean_dice") -> list[ImageResult]:
    """The ``n`` results with the lowest ``key`` score; images without a score (NaN) come last."""

    def rank(result: ImageResult) -> tuple[bool, float]:
        value = _as_number(getattr(result.resolved_scores(), key))
        return (value is None, value if value is not None else 0.0)

    return sorted(results, key=rank)[: max(0, n)]


def write_worst_overlays(
    directory: str | Path,
    results: Sequence[ImageResult],
    load: Callable[[str], Thumbnails],
    n: int = 4,
    ignore_index: int | None = None,
) -> list[Path]:
    """Overlays ``worst_<rank>_<name>.png`` of the ``n`` images with the lowest mean Dice; ``load(name)``
    returns that image's thumbnails."""
    paths = []
    for rank, result in enumerate(worst_images(results, n), start=1):
        image, prediction, truth = load(result.name)
        dice = _as_number(result.resolved_scores().mean_dice)
        title = f"#{rank} {result.name}: mean Dice {_number(dice, 3)}"
        leaf = f"worst_{rank}_{column_name(result.name)}.png"
        paths.append(write_overlay(Path(directory) / leaf, image, prediction, truth, title, ignore_index))
    return paths


def write_report(
    directory: str | Path,
    results: Sequence[ImageResult],
    class_names: Sequence[str],
    load: Callable[[str], Thumbnails] | None = None,
    worst: int = 4,
) -> dict[str, Any]:
    """Every report file in ``directory``: per_image.csv, summary.csv, summary.json, confusion.png,
    class_scores.png and, given ``load``, overlays of the ``worst`` images. Returns the paths by role."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    summary = score_summary(results, class_names)
    confusion = summary.aggregates.micro.confusion
    paths: dict[str, Any] = {
        "per_image_csv": write_per_image_csv(directory / "per_image.csv", results, class_names),
        "summary_csv": write_summary_csv(directory / "summary.csv", summary),
        "summary_json": write_summary_json(directory / "summary.json", summary),
        "confusion_png": plot_confusion(directory / "confusion.png", confusion, class_names),
        "class_scores_png": plot_class_scores(directory / "class_scores.png", summary.aggregates.micro, class_names),
    }
    if load is not None:
        paths["overlays"] = write_worst_overlays(directory, results, load, worst)
    return paths


# ----------------------------------------------------------------------------------------------- runs


def compare_runs(runs: Sequence[dict[str, Any]]) -> str:
    """A plain-text table, one column per run ({run_id, name, params, metrics}); rows: model, mean_iou,
    mean_dice, each ``dice_<class>``, megapixels_per_second. ``*`` marks the best (highest) value of a row
    when two or more runs have one; a missing or NaN value shows as ``-``."""
    if not runs:
        return "no runs to compare"
    run_ids = [str(r.get("run_id") or "") for r in runs]
    headers = [str(r.get("name") or run_ids[i][:8] or f"run {i + 1}") for i, r in enumerate(runs)]
    models = [str((r.get("params") or {}).get("model", "-")) for r in runs]
    table = [
        ["", *[f"{h} " for h in headers]],
        ["run_id", *[f"{i[:12] or '-'} " for i in run_ids]],
        ["model", *[f"{m} " for m in models]],
    ]
    logged = [r.get("metrics") or {} for r in runs]
    dice_keys = dict.fromkeys(k for m in logged for k in sorted(m) if k.startswith("dice_"))
    for key in ("mean_iou", "mean_dice", *dice_keys, "megapixels_per_second"):
        digits = 2 if key == "megapixels_per_second" else 4
        table.append([key, *_marked([m.get(key) for m in logged], digits)])
    return _align(table)


def _align(table: list[list[str]]) -> str:
    """First column left-aligned, the others right-aligned, trailing blanks stripped."""
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    lines = []
    for row in table:
        rest = (cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        cells = [row[0].ljust(widths[0]), *rest]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _marked(values: list[Any], digits: int) -> list[str]:
    numbers = [_as_number(v) for v in values]
    present = [v for v in numbers if v is not None]
    best = max(present) if len(present) >= 2 else None
    return [_number(v, digits) + ("*" if best is not None and v == best else " ") for v in numbers]


def _as_number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"
