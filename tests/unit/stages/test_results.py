"""The batch's typed results (segpipe/stages/results.py): summary, result and canary, to JSON and back."""

from __future__ import annotations

import json

import pytest

from segpipe.reports import ScoreSummary
from segpipe.stages.report import ImageFailure, ImageReport
from segpipe.stages.results import BatchResult, CanaryCheck, CanarySummary, check_canary, summarize_batch
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


def test_each_canary_check_keeps_the_nights_it_was_compared_with() -> None:
    def row(run_id: str, date: str, dice: float | None) -> dict[str, object]:
        return {"run_id": run_id, "run_date": date, "role": "canary", "mean_dice": dice}

    history = [row("r1", "2026-03-01", 0.8), row("r2", "2026-03-01", 0.9), row("r3", "2026-03-02", None)]
    history += [row("r4", "2026-03-03", 0.7), row("tonight", "2026-03-04", 0.6)]
    (dice, *_) = check_canary(history, [row("tonight", "2026-03-04", 0.6)], CLASSES, 0.05, nights=3)
    assert [date for date, _ in dice.history] == ["2026-03-01", "2026-03-03"]  # a night without the figure is left out
    assert [value for _, value in dice.history] == pytest.approx([0.85, 0.7])


def test_a_canary_check_round_trips_with_its_nights() -> None:
    summary = CanarySummary((CanaryCheck("mean_dice", 0.8, 0.9, 2, 0.02, history=(("2026-03-01", 0.9),)),))
    assert CanarySummary.from_json(json.loads(json.dumps(summary.to_json()))) == summary
