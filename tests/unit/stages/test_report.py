"""The image report (segpipe/stages/report.py): metrics.json's form and back; the batch's report files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import tifffile

from segpipe.config import EvalConfig
from segpipe.metrics import scores
from segpipe.reports import ImageResult, report_files
from segpipe.stages.evaluate import Evaluation
from segpipe.stages.plan import plan_batch
from segpipe.stages.report import ImageFailure, ImageReport, write_batch_report
from segpipe.stages.settings import RunSettings
from segpipe.storage import location


def report(scored: bool = True) -> ImageReport:
    whole = scores(np.array([[9, 1], [2, 8]]))
    evaluation = Evaluation(whole, whole.band(), whole.band()) if scored else None
    return ImageReport(
        name="a",
        image="/in/a.tif",
        truth="/in/a_truth.tif" if scored else None,
        mask="/out/a/a.ome.zarr/labels/mask/0",
        ome_zarr="/out/a/a.ome.zarr",
        shape_cyx=(1, 4, 5),
        megapixels=2e-5,
        megapixels_computed=2e-5,
        megapixels_per_second=0.5,
        chunks=1,
        chunks_computed=1,
        seconds={"ingest": 0.1, "infer": 0.2},
        evaluation=evaluation,
        class_pixels=(11, 9),
        pixel_size=(0.5, 0.5),
        unit="micrometer",
    )


def test_a_report_round_trips_through_json() -> None:
    for value in (report(), report(scored=False)):
        assert ImageReport.from_json(json.loads(json.dumps(value.to_json()))) == value


def test_metrics_json_has_the_fields_then_the_scores() -> None:
    data = report().to_json()
    keys = list(data)
    assert keys[:2] == ["name", "image"]
    assert keys.index("image_version") < keys.index("iou")
    assert data["confusion_matrix"] == [[9, 1], [2, 8]]
    assert "iou" not in report(scored=False).to_json()


def test_the_confusion_matrix_comes_back_as_an_array() -> None:
    confusion = report().confusion
    assert confusion is not None
    np.testing.assert_array_equal(confusion, [[9, 1], [2, 8]])


def test_a_failure_round_trips_through_json() -> None:
    failure = ImageFailure("b", "/in/b.tif", "/in/b.tif: truncated", 2)
    data = failure.to_json()
    assert data["failed"] is True
    assert ImageFailure.from_json(data) == failure


def test_the_batch_report_is_written_through_the_output_location(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "a.tif", np.ones((30, 40), np.uint16))
    tifffile.imwrite(tmp_path / "a_truth.tif", np.zeros((30, 40), np.uint8))
    plan = plan_batch([str(tmp_path / "a.tif")], [str(tmp_path / "a_truth.tif")], RunSettings(out=str(tmp_path)))
    scored = report()
    out = f"memory://segpipe-test/{tmp_path.name}/out"
    written = write_batch_report(plan, out, [scored, replace(scored, truth=None, evaluation=None)], EvalConfig(), 0)
    confusion = scored.confusion
    assert confusion is not None
    expected = report_files([ImageResult(scored.name, confusion)], plan.model.card.class_names)
    target = location(out).child("report")
    assert written == [target.child(name).url for name in sorted([*expected, "index.html"])]
    for name, data in expected.items():
        assert target.child(name).read_bytes() == data, name
    page = target.child("index.html").read_bytes().decode()
    assert page.count('src="../a/preview.png"') == 2  # the scored image and the one without truth


def test_a_batch_without_truths_still_gets_its_page_with_the_failures(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "a.tif", np.ones((30, 40), np.uint16))
    plan = plan_batch([str(tmp_path / "a.tif")], None, RunSettings(out=str(tmp_path)))
    out = f"memory://segpipe-test/{tmp_path.name}/plain"
    failure = ImageFailure("b", "/in/b.tif", "/in/b.tif: truncated <tile 3>", 2)
    written = write_batch_report(plan, out, [report(scored=False)], EvalConfig(), failures=[failure])
    target = location(out).child("report")
    assert written == [target.child("index.html").url]
    page = target.child("index.html").read_bytes().decode()
    assert "/in/b.tif: truncated &lt;tile 3&gt;" in page
