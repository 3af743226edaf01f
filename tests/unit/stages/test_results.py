"""The batch's typed results (segpipe/stages/results.py): summary, result and canary, to JSON and back."""

from __future__ import annotations

import json

from segpipe.reports import ScoreSummary
from segpipe.stages.report import ImageFailure, ImageReport
from segpipe.stages.results import BatchResult, CanaryCheck, CanarySummary, summarize_batch
from tests.unit.stages.test_report import report

CLASSES = ("background", "nucleus")


def result() -> BatchResult:
    failure = ImageFailure("b", "/in/b.tif", "/in/b.tif: truncated", 2)
    images: tuple[ImageReport | ImageFailure, ...] = (report(), failure)
    summary = summarize_batch([report()], [failure], CLASSES, 2.0)
    return BatchResult(images, summary, "/out", "run-9", (("a", "image-run-1"),), "sqlite:///x.db")


def test_a_batch_result_round_trips_through_json() -> None:
    value = result()
    data = json.loads(json.dumps(value.to_json()))
    scores = value.batch.scores
    assert scores is not None
    back = BatchResult.from_json(data, ScoreSummary.from_json(scores.to_json()))
    assert back == value


def test_the_batch_json_form_keeps_micro_scores_at_the_top_level() -> None:
    data = result().batch.to_json()
    assert list(data)[:8] == [
        "images",
        "images_failed",
        "images_skipped",
        "megapixels",
        "megapixels_computed",
        "seconds",
        "megapixels_per_second",
        "class_names",
    ]
    assert data["confusion_matrix"] == [[9, 1], [2, 8]]
    assert list(data["per_image"]) == ["iou", "dice", "mean_iou", "mean_dice"]
    assert "objects" not in data
    assert list(data)[-2:] == ["run_id", "results_table"]


def test_each_image_entry_carries_its_mlflow_run_id() -> None:
    entries = result().to_json()["images"]
    assert [e["mlflow_run_id"] for e in entries] == ["image-run-1", ""]
    assert result().to_json()["failures"] == [result().failures[0].to_json()]


def test_a_summary_without_truths_has_no_scores() -> None:
    summary = summarize_batch([report(scored=False)], [], CLASSES, 0.0)
    assert summary.scores is None
    assert summary.megapixels_per_second is None
    assert "iou" not in summary.to_json()


def test_the_canary_summary_round_trips_and_alerts() -> None:
    checks = (CanaryCheck("mean_dice", 0.80, 0.90, 3, 0.02), CanaryCheck("fraction_nucleus", 0.3, None, 0, 0.02))
    summary = CanarySummary(checks)
    assert summary.alert
    data = summary.to_json()
    assert data["checks"][0]["alert"] is True
    assert CanarySummary.from_json(data) == summary
