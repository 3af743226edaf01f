"""Results for analytics teams, readable without MLflow: every run appends one Parquet file to
``<out>/results/run_date=YYYY-MM-DD/<run_id>.parquet`` (Hive partitions, so pandas, DuckDB and Polars read the
folder as one table with a ``run_date`` column), one row per image per run. Canary images (a fixed labelled set
scored every run) are rows too, and ``check_canary`` compares tonight's canary figures with recent nights'.

Columns: run_id, run_started_at (UTC), model_name, model_uri, model_version, model_sha256, image_name, image_url,
image_size, image_version (the store's etag/checksum or mtime), role (input | canary), skipped, height, width,
megapixels, pixel_area and area_unit (physical units when the image has a pixel size), mean_confidence, and per
class ``<class>``: ``pixels_``, ``fraction_``, ``area_``, ``iou_`` and ``dice_`` (null without truth), plus
mean_iou and mean_dice.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from segpipe.models import ModelRef
from segpipe.stages.report import ImageReport
from segpipe.storage import location, public_url

RESULTS_DIR = "results"
PARTITION = "run_date"


@dataclass(frozen=True)
class RunInfo:
    """The run the rows belong to."""

    run_id: str
    started: datetime
    model: ModelRef

    @property
    def run_date(self) -> str:
        return self.started.date().isoformat()


@dataclass(frozen=True)
class CanaryCheck:
    """One canary figure tonight against its mean over recent nights; ``alert`` when it moved beyond tolerance."""

    metric: str
    tonight: float
    recent_mean: float | None
    nights: int
    tolerance: float

    @property
    def alert(self) -> bool:
        return self.recent_mean is not None and abs(self.tonight - self.recent_mean) > self.tolerance


def result_rows(run: RunInfo, reports: list[ImageReport], class_names: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per image: what the run knows of it, in the table's columns."""
    return [_row(run, report, class_names) for report in reports]


def _row(run: RunInfo, report: ImageReport, class_names: tuple[str, ...]) -> dict[str, Any]:
    registry = run.model.registry
    pixel_area = report.pixel_size[0] * report.pixel_size[1]
    total = max(1, sum(report.class_pixels))
    row: dict[str, Any] = {
        "run_id": run.run_id,
        "run_started_at": run.started,
        "model_name": run.model.card.name,
        "model_uri": public_url(run.model.uri),
        "model_version": str(registry.version) if registry is not None else "",
        "model_sha256": run.model.sha256,
        "image_name": report.name,
        "image_url": public_url(report.image),
        "image_size": report.image_size,
        "image_version": report.image_version,
        "role": report.role,
        "skipped": report.skipped,
        "height": report.shape_cyx[1],
        "width": report.shape_cyx[2],
        "megapixels": report.megapixels,
        "pixel_area": pixel_area,
        "area_unit": f"{report.unit}^2" if report.unit else "pixel",
        "mean_confidence": report.mean_confidence,
        "mean_iou": report.scores.get("mean_iou"),
        "mean_dice": report.scores.get("mean_dice"),
    }
    for k, name in enumerate(class_names):
        pixels = report.class_pixels[k] if k < len(report.class_pixels) else None
        row[f"pixels_{name}"] = pixels
        row[f"fraction_{name}"] = None if pixels is None else pixels / total
        row[f"area_{name}"] = None if pixels is None else pixels * pixel_area
        for metric in ("iou", "dice"):
            values = report.scores.get(metric)
            row[f"{metric}_{name}"] = values[k] if values is not None and k < len(values) else None
    return row


def append_results(out: str, run: RunInfo, reports: list[ImageReport], class_names: tuple[str, ...]) -> str:
    """Write this run's rows as ``<out>/results/run_date=<date>/<run_id>.parquet``; returns its URL."""
    table = pa.Table.from_pylist(result_rows(run, reports, class_names))
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    target = location(out).child(RESULTS_DIR, f"{PARTITION}={run.run_date}", f"{run.run_id}.parquet")
    target.write_bytes(buffer.getvalue())
    return target.url


def read_results(out: str) -> list[dict[str, Any]]:
    """Every row written under ``<out>/results`` (oldest night first), with its ``run_date``."""
    root = location(out).child(RESULTS_DIR)
    rows: list[dict[str, Any]] = []
    for partition in sorted(root.listdir()):
        if not partition.startswith(f"{PARTITION}="):
            continue
        for name in sorted(root.child(partition).listdir()):
            table = pq.read_table(io.BytesIO(root.child(partition, name).read_bytes()))
            rows += [{**row, PARTITION: partition.split("=", 1)[1]} for row in table.to_pylist()]
    return rows


def check_canary(
    history: list[dict[str, Any]],
    tonight: list[dict[str, Any]],
    class_names: tuple[str, ...],
    tolerance: float,
    nights: int = 7,
) -> list[CanaryCheck]:
    """Tonight's canary mean Dice and class fractions against their means over the last ``nights`` earlier
    run dates (same model or not: a new model's shift is what the check is for)."""
    today = {row["run_id"] for row in tonight}
    earlier = [r for r in history if r["role"] == "canary" and r["run_id"] not in today]
    dates = sorted({r[PARTITION] for r in earlier})[-nights:]
    recent = [r for r in earlier if r[PARTITION] in dates]
    canary = [r for r in tonight if r["role"] == "canary"]
    metrics = ["mean_dice", *(f"fraction_{name}" for name in class_names)]
    checks = []
    for metric in metrics:
        now = _mean(r.get(metric) for r in canary)
        if now is not None:
            checks.append(CanaryCheck(metric, now, _mean(r.get(metric) for r in recent), len(dates), tolerance))
    return checks


def _mean(values: Any) -> float | None:
    present = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(present) / len(present) if present else None
