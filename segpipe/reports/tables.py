"""Report tables from per-image results, and the one way a report file is written.

One row per image (``per_image.csv``), one per class (``summary.csv``), the batch summary (``summary.json``); files are
written by ``write_file``, atomically through ``segpipe.storage``. CSV cells for undefined scores (NaN) are empty; JSON
has null.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segpipe import metrics
from segpipe.errors import InputError, OutputError
from segpipe.metrics import defined
from segpipe.objects import sum_object_metrics
from segpipe.storage import location

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
    """One image's evaluation.

    Its confusion matrix, its scores (computed from the matrix when None) and, optionally, its object metrics
    (``segpipe.objects.object_metrics``).
    """

    name: str
    confusion: np.ndarray
    scores: metrics.Scores | None = None
    objects: list[dict[str, Any]] | None = None

    def resolved_scores(self) -> metrics.Scores:
        """The given scores, or those computed from the confusion matrix."""
        return self.scores if self.scores is not None else metrics.scores(self.confusion)


@dataclass(frozen=True)
class ScoreSummary:
    """A batch's scores.

    ``micro`` (summed matrices) and ``per_image`` (means over images) aggregates, summed object metrics (None without
    any), and the images from worst to best by mean Dice.
    """

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
        """From ``to_json``'s form (``summary.json``)."""
        aggregates = metrics.BatchAggregates(
            metrics.Scores.from_json(data["micro"]),
            metrics.PerImageScores.from_json(data["per_image"]),
            int(data["images"]),
        )
        return cls(tuple(data["classes"]), aggregates, data["objects"], tuple(data["worst_by_mean_dice"]))


def column_name(class_name: str) -> str:
    """A class name as a CSV column suffix: lower case, runs of other characters replaced by ``_``."""
    return re.sub(r"[^0-9a-z]+", "_", class_name.lower()).strip("_") or "class"


def class_columns(class_names: Sequence[str], num_classes: int) -> list[str]:
    """The column suffixes of ``class_names``, checked against the number of classes.

    Raises:
        InputError: the count differs, or two names give the same column.
    """
    if len(class_names) != num_classes:
        raise InputError(f"{len(class_names)} class names given for {num_classes} classes")
    columns = [column_name(n) for n in class_names]
    if len(set(columns)) != len(columns):
        raise InputError(f"class names {list(class_names)} collide as column names {columns}")
    return columns


def worst_images(results: Sequence[ImageResult], n: int, key: str = "mean_dice") -> list[ImageResult]:
    """The ``n`` results with the lowest ``key`` score; images without a score (NaN) come last."""

    def rank(result: ImageResult) -> tuple[bool, float]:
        value = defined(getattr(result.resolved_scores(), key))
        return (value is None, value if value is not None else 0.0)

    return sorted(results, key=rank)[: max(0, n)]


def write_file(path: str | Path, data: bytes) -> Path:
    """Write one report file atomically (``Location.write_bytes``); returns ``path``.

    Raises:
        OutputError: the file cannot be written.
    """
    try:
        location(str(path)).write_bytes(data)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc})") from None
    return Path(path)


def per_image_rows(results: Sequence[ImageResult], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per image: name, per-class iou/dice/precision/recall, means, pixels.

    Object metrics at IoU 0.5 plus F1 averaged over thresholds are added when any image has them.
    """
    with_objects = any(r.objects for r in results)
    rows = []
    for result in results:
        scores = result.resolved_scores()
        columns = class_columns(class_names, len(scores.iou))
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


def per_image_csv(results: Sequence[ImageResult], class_names: Sequence[str]) -> bytes:
    """``per_image_rows`` as CSV bytes (NaN as an empty cell).

    Raises:
        InputError: no results.
    """
    rows = per_image_rows(results, class_names)
    if not rows:
        raise InputError("no image results to write")
    return _csv(list(rows[0]), rows)


def write_per_image_csv(path: str | Path, results: Sequence[ImageResult], class_names: Sequence[str]) -> Path:
    """Write ``per_image_rows`` as CSV (NaN as an empty cell)."""
    return write_file(path, per_image_csv(results, class_names))


def score_summary(results: Sequence[ImageResult], class_names: Sequence[str]) -> ScoreSummary:
    """The ``ScoreSummary`` of a batch's image results.

    ``micro`` (summed matrices), ``per_image`` (means over images), summed object metrics, and the images from worst to
    best by mean Dice.
    """
    aggregates = metrics.batch_aggregates([r.confusion for r in results])
    class_columns(class_names, len(aggregates.micro.iou))
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


def summary_csv(summary: ScoreSummary) -> bytes:
    """``summary_rows`` as CSV bytes."""
    return _csv(list(SUMMARY_COLUMNS), summary_rows(summary))


def write_summary_csv(path: str | Path, summary: ScoreSummary) -> Path:
    """Write ``summary_rows`` as CSV."""
    return write_file(path, summary_csv(summary))


def summary_json(summary: ScoreSummary) -> bytes:
    """The summary as JSON bytes, NaN as null."""
    return json.dumps(summary.to_json(), indent=2, allow_nan=False).encode()


def write_summary_json(path: str | Path, summary: ScoreSummary) -> Path:
    """Write the summary as JSON, NaN as null."""
    return write_file(path, summary_json(summary))


def _csv(columns: list[str], rows: list[dict[str, Any]]) -> bytes:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns)
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    return text.getvalue().encode()


def _cell(value: Any) -> Any:
    return "" if isinstance(value, float) and math.isnan(value) else value
