"""A batch's typed results (``BatchSummary``, ``BatchResult``, the canary check) and the results table.

Results for analytics teams, readable without MLflow: every run appends one Parquet file to
``<out>/results/run_date=YYYY-MM-DD/<run_id>.parquet`` (Hive partitions, so pandas, DuckDB and Polars read the
folder as one table with a ``run_date`` column), one row per image per run. Canary images (a fixed labelled set
scored every run) are rows too, and ``check_canary`` compares tonight's canary figures with recent nights'.

Columns: run_id, run_started_at (UTC), model_name, model_uri, model_version, model_sha256, image_name, image_url,
image_size, image_version (the store's etag/checksum or mtime), role (input | canary), skipped, height, width,
megapixels, pixel_area and area_unit (physical units when the image has a pixel size), mean_confidence, and per
class ``<class>``: ``pixels_``, ``fraction_``, ``area_``, ``iou_`` and ``dice_`` (null without truth), plus
mean_iou and mean_dice; with ``--objects``, per foreground class ``objects_`` (count) and ``median_area_``
(pixels); mean_uncertainty and uncertain_fraction (null without ``--save-uncertainty``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

import pyarrow.parquet as pq

from segpipe.arrow_rows import table_from_rows
from segpipe.metrics import finite_or_none
from segpipe.models import ModelRef
from segpipe.reports import ImageResult, ScoreSummary, score_summary
from segpipe.stages.plan import BatchPlan
from segpipe.stages.report import ImageFailure, ImageReport, write_json
from segpipe.stages.settings import CanarySet
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
        """The day the run started (ISO, ``YYYY-MM-DD``)."""
        return self.started.date().isoformat()


@dataclass(frozen=True)
class CanaryCheck:
    """One canary figure tonight against its mean over recent nights; ``alert`` when it moved beyond tolerance.

    Scores and fractions move by an absolute ``tolerance``; object counts (``relative``) by that share of the mean.
    """

    metric: str
    tonight: float
    recent_mean: float | None
    nights: int
    tolerance: float
    relative: bool = False
    history: tuple[tuple[str, float], ...] = ()  # (run date, mean) of each recent night with the figure, oldest first

    @property
    def alert(self) -> bool:
        """Whether tonight's figure moved beyond the tolerance from the recent mean."""
        if self.recent_mean is None:
            return False
        allowed = self.tolerance * abs(self.recent_mean) if self.relative else self.tolerance
        return abs(self.tonight - self.recent_mean) > allowed


def result_rows(run: RunInfo, reports: list[ImageReport], class_names: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per image: what the run knows of it, in the table's columns."""
    return [_row(run, report, class_names) for report in reports]


def _row(run: RunInfo, report: ImageReport, class_names: tuple[str, ...]) -> dict[str, Any]:
    registry = run.model.registry
    scores = report.evaluation.scores if report.evaluation is not None else None
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
        "megapixels_computed": report.megapixels_computed,
        "pixel_area": pixel_area,
        "area_unit": f"{report.unit}^2" if report.unit else "pixel",
        "mean_confidence": report.mean_confidence,
        "foreground_fraction": report.foreground_fraction,
        "mean_iou": scores.mean_iou if scores is not None else None,
        "mean_dice": scores.mean_dice if scores is not None else None,
        "background_pixels_excluded": _excluded(report),
        "mean_uncertainty": report.mean_uncertainty,
        "uncertain_fraction": report.uncertain_fraction,
    }
    for k, name in enumerate(class_names):
        pixels = report.class_pixels[k] if k < len(report.class_pixels) else None
        row[f"pixels_{name}"] = pixels
        row[f"fraction_{name}"] = None if pixels is None else pixels / total
        row[f"area_{name}"] = None if pixels is None else pixels * pixel_area
        for metric in ("iou", "dice"):
            values = getattr(scores, metric) if scores is not None else ()
            row[f"{metric}_{name}"] = values[k] if k < len(values) else None
        if k and report.object_counts:  # background has no objects
            row[f"objects_{name}"] = report.object_counts[k]
            row[f"median_area_{name}"] = report.median_areas[k]
    return row


def _excluded(report: ImageReport) -> int | None:
    """The pixels outside ``--foreground`` left out of the scores; None without a truth or a foreground."""
    return report.evaluation.background_pixels_excluded if report.evaluation is not None else None


def results_url(out: str, run: RunInfo) -> str:
    """Where a run's rows go: ``<out>/results/run_date=<date>/<run_id>.parquet``."""
    return location(out).child(RESULTS_DIR, f"{PARTITION}={run.run_date}", f"{run.run_id}.parquet").url


def append_results(out: str, run: RunInfo, reports: list[ImageReport], class_names: tuple[str, ...]) -> str:
    """Write this run's rows in one object, as the run's last step (a run that never finished has no row)."""
    table = table_from_rows(result_rows(run, reports, class_names))  # no pandas import: 0.3 s of every run
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    target = location(results_url(out, run))
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
    """Tonight's canary figures against their means over the last ``nights`` earlier run dates.

    The figures: mean Dice, class fractions, with ``--objects`` object counts per class, and with
    ``--save-uncertainty`` the mean uncertainty (nats) and the share of uncertain pixels. Same model or not:
    a new model's shift is what the check is for.
    """
    today = {row["run_id"] for row in tonight}
    earlier = [r for r in history if r["role"] == "canary" and r["run_id"] not in today]
    dates = sorted({r[PARTITION] for r in earlier})[-nights:]
    recent = [r for r in earlier if r[PARTITION] in dates]
    canary = [r for r in tonight if r["role"] == "canary"]
    metrics = ["mean_dice", *(f"fraction_{name}" for name in class_names), *(f"objects_{n}" for n in class_names[1:])]
    metrics += ["mean_uncertainty", "uncertain_fraction"]
    checks = []
    for metric in metrics:
        now = _mean(r.get(metric) for r in canary)
        if now is not None:
            recent_mean = _mean(r.get(metric) for r in recent)
            relative = metric.startswith("objects_")
            nightly = ((d, _mean(r.get(metric) for r in recent if r[PARTITION] == d)) for d in dates)
            trend = tuple((d, v) for d, v in nightly if v is not None)
            checks.append(CanaryCheck(metric, now, recent_mean, len(dates), tolerance, relative, trend))
    return checks


def _mean(values: Any) -> float | None:
    present = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(present) / len(present) if present else None


@dataclass(frozen=True)
class CanarySummary:
    """Tonight's canary figures against recent runs'; ``alert`` when one moved beyond tolerance."""

    checks: tuple[CanaryCheck, ...]

    @property
    def alert(self) -> bool:
        """Whether any check alerts."""
        return any(check.alert for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        """The JSON form, each check with its ``alert``."""
        return {"alert": self.alert, "checks": [{**asdict(check), "alert": check.alert} for check in self.checks]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CanarySummary:
        """From ``to_json``'s form."""
        fields = ("metric", "tonight", "recent_mean", "nights", "tolerance", "relative")
        checks = [({k: c[k] for k in fields if k in c}, c.get("history", ())) for c in data["checks"]]
        return cls(tuple(CanaryCheck(**values, history=tuple((d, v) for d, v in trend)) for values, trend in checks))


def canary_summary(
    out: str, run: RunInfo, reports: list[ImageReport], class_names: tuple[str, ...], canary: CanarySet
) -> CanarySummary:
    """Tonight's canary figures (the ``canary`` reports) against the results table's recent runs."""
    tonight = result_rows(run, [r for r in reports if r.role == "canary"], class_names)
    return CanarySummary(tuple(check_canary(read_results(out), tonight, class_names, canary.tolerance, canary.nights)))


@dataclass(frozen=True)
class BatchSummary:
    """Batch figures (``batch.json`` less its images).

    Counts, throughput over the pixels this run computed, and with truths the scores (micro at the top level,
    ``per_image`` means, summed object metrics).
    """

    images: int
    images_failed: int
    images_skipped: int
    megapixels: float
    megapixels_computed: float
    seconds: float
    class_names: tuple[str, ...]
    scores: ScoreSummary | None = None
    run_id: str = ""
    results_table: str = ""
    canary: CanarySummary | None = None

    @property
    def megapixels_per_second(self) -> float | None:
        """Megapixels this run computed per second, or None when it computed none or took no time."""
        computed, seconds = self.megapixels_computed, self.seconds
        return computed / seconds if computed and seconds else None

    def to_json(self) -> dict[str, Any]:
        """The JSON form of ``batch.json`` (without its ``images`` entries), NaN as null."""
        data: dict[str, Any] = {
            "images": self.images,
            "images_failed": self.images_failed,
            "images_skipped": self.images_skipped,
            "megapixels": self.megapixels,
            "megapixels_computed": self.megapixels_computed,
            "seconds": self.seconds,
            "megapixels_per_second": self.megapixels_per_second,
            "class_names": list(self.class_names),
        }
        if self.scores is not None:
            data.update(self.scores.aggregates.micro.to_json())
            per_image = self.scores.aggregates.per_image.to_json()
            data["per_image"] = {k: per_image[k] for k in ("iou", "dice", "mean_iou", "mean_dice")}
            if self.scores.objects:
                data["objects"] = finite_or_none(self.scores.objects)
        data.update(run_id=self.run_id, results_table=self.results_table)
        if self.canary is not None:
            data["canary"] = self.canary.to_json()
        return dict(finite_or_none(data))

    @classmethod
    def from_json(cls, data: dict[str, Any], scores: ScoreSummary | None = None) -> BatchSummary:
        """From ``to_json``'s form.

        The scores, of which batch.json keeps a part, are given apart (``report/summary.json`` holds them whole).
        """
        canary = CanarySummary.from_json(data["canary"]) if data.get("canary") else None
        return cls(
            images=int(data["images"]),
            images_failed=int(data["images_failed"]),
            images_skipped=int(data["images_skipped"]),
            megapixels=float(data["megapixels"]),
            megapixels_computed=float(data["megapixels_computed"]),
            seconds=float(data["seconds"]),
            class_names=tuple(data["class_names"]),
            scores=scores,
            run_id=data.get("run_id", ""),
            results_table=data.get("results_table", ""),
            canary=canary,
        )


def summarize_batch(
    reports: Sequence[ImageReport], failures: Sequence[ImageFailure], class_names: tuple[str, ...], seconds: float
) -> BatchSummary:
    """The batch figures of the input images' ``reports`` and ``failures``."""
    scored = [
        ImageResult(r.name, r.evaluation.scores.confusion, r.evaluation.scores, r.objects)
        for r in reports
        if r.evaluation is not None
    ]
    return BatchSummary(
        images=len(reports) + len(failures),
        images_failed=len(failures),
        images_skipped=sum(r.skipped for r in reports),
        megapixels=sum(r.megapixels for r in reports),
        megapixels_computed=sum(r.megapixels_computed for r in reports),
        seconds=seconds,
        class_names=class_names,
        scores=score_summary(scored, class_names) if scored else None,
    )


@dataclass(frozen=True)
class BatchResult:
    """What a batch run returns: every image's outcome (in plan order), the summary, and where it was logged."""

    images: tuple[ImageReport | ImageFailure, ...]
    batch: BatchSummary
    out: str
    mlflow_run_id: str = ""
    image_run_ids: tuple[tuple[str, str], ...] = ()  # (image name, its MLflow run id)
    tracking_uri: str = ""

    @property
    def failures(self) -> tuple[ImageFailure, ...]:
        """The images that failed."""
        return tuple(o for o in self.images if isinstance(o, ImageFailure))

    @property
    def reports(self) -> tuple[ImageReport, ...]:
        """The reports of the images that did not fail."""
        return tuple(o for o in self.images if isinstance(o, ImageReport))

    def to_json(self) -> dict[str, Any]:
        """The JSON form (``segpipe run --json``): each image entry carries its MLflow run id."""
        run_ids = dict(self.image_run_ids)
        return {
            "images": [{**o.to_json(), "mlflow_run_id": run_ids.get(o.name, "")} for o in self.images],
            "batch": self.batch.to_json(),
            "failures": [f.to_json() for f in self.failures],
            "mlflow_run_id": self.mlflow_run_id,
            "tracking_uri": self.tracking_uri,
            "out": self.out,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], scores: ScoreSummary | None = None) -> BatchResult:
        """From ``to_json``'s form; ``scores`` as for ``BatchSummary.from_json``."""
        images = tuple(
            ImageFailure.from_json(e) if e.get("failed") else ImageReport.from_json(e) for e in data["images"]
        )
        run_ids = tuple((e["name"], e["mlflow_run_id"]) for e in data["images"] if e.get("mlflow_run_id"))
        batch = BatchSummary.from_json(data["batch"], scores)
        return cls(images, batch, data["out"], data["mlflow_run_id"], run_ids, data["tracking_uri"])


def summarize_run(
    out: str,
    plan: BatchPlan,
    run: RunInfo,
    outcomes: Sequence[ImageReport | ImageFailure],
    seconds: float,
    canary: CanarySet | None,
) -> BatchSummary:
    """The batch summary of a run's outcomes.

    The canary is checked against the results table's earlier runs (this run's rows are appended last, by
    ``append_results``).
    """
    reports = [o for o in outcomes if isinstance(o, ImageReport)]
    failures = [o for o in outcomes if isinstance(o, ImageFailure)]
    class_names = plan.model.card.class_names
    summary = summarize_batch([r for r in reports if r.role == "input"], failures, class_names, seconds)
    table = public_url(results_url(out, run))
    checked = canary_summary(out, run, reports, class_names, canary) if canary is not None else None
    return replace(summary, run_id=run.run_id, results_table=table, canary=checked)


def write_batch_json(out: str, summary: BatchSummary, outcomes: Sequence[ImageReport | ImageFailure]) -> str:
    """Write ``<out>/batch.json``: the summary and every image's entry; returns its URL."""
    entries = [o.to_json() for o in outcomes]
    return write_json(location(out).child("batch.json").url, {**summary.to_json(), "images": entries})
