"""--save-uncertainty: each pixel's softmax entropy, written chunk by chunk, equals the whole image's; reported."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from segpipe import normalize
from segpipe.config import EvalConfig, TilingConfig
from segpipe.models import load_predictor
from segpipe.reports import most_uncertain
from segpipe.stages.finalize import finalize_image
from segpipe.stages.infer import Inferred, infer_image
from segpipe.stages.ingest import Ingested, ingest_image
from segpipe.stages.plan import BatchPlan, plan_batch
from segpipe.stages.report import ImageReport, chunk_uncertainties, image_report, write_batch_report
from segpipe.stages.results import RunInfo, result_rows
from segpipe.stages.settings import RunSettings
from segpipe.synthetic import render
from segpipe.tiling import Region, chunk_grid
from segpipe.tracking.batch_log import image_metrics
from segpipe.uncertainty import UNCERTAIN_NATS, entropy
from segpipe.windows import softmax_in_place

HEIGHT, WIDTH, CHUNK = 70, 90, 32


def _image() -> np.ndarray:
    image, _ = render(5, 5 + HEIGHT, 9, 9 + WIDTH, seed=3)
    return (image * 4000 + 100).astype(np.uint16)


def _plan(tmp_path: Path, stitch: str = "trim", **options: bool) -> tuple[BatchPlan, Ingested, RunSettings]:
    tifffile.imwrite(tmp_path / "scan.tif", _image())
    tiling = TilingConfig(chunk=CHUNK, tile=16, stitch=stitch)
    settings = replace(RunSettings(out=str(tmp_path / "out")), tiling=tiling, **options)
    plan = plan_batch([str(tmp_path / "scan.tif")], None, settings)
    return plan, ingest_image(plan.jobs[0], plan), settings


def _whole_image_entropy(plan: BatchPlan, ingested: Ingested) -> np.ndarray:
    predictor = load_predictor(plan.model, "cpu")
    halo, divisor = plan.halo, plan.model.card.size_divisor
    data = normalize.apply(_image()[np.newaxis], ingested.stats)
    pad_y, pad_x = -(HEIGHT + 2 * halo) % divisor, -(WIDTH + 2 * halo) % divisor
    padded = np.pad(data, ((0, 0), (halo, halo + pad_y), (halo, halo + pad_x)), mode="symmetric")
    logits = np.array(predictor(padded[np.newaxis])[0][:, halo : halo + HEIGHT, halo : halo + WIDTH])
    softmax_in_place(logits)
    return entropy(logits)


@pytest.fixture
def inferred(tmp_path: Path) -> tuple[BatchPlan, Ingested, Inferred]:
    plan, ingested, settings = _plan(tmp_path, save_uncertainty=True)
    return plan, ingested, infer_image(plan.jobs[0], ingested, plan, settings.inference)


def test_entropy_is_zero_when_sure_and_log_k_when_not() -> None:
    sure, unsure = np.zeros((2, 1, 1), np.float32), np.full((3, 1, 1), 1 / 3, np.float32)
    sure[0] = 1.0
    assert entropy(sure)[0, 0] == 0.0
    assert entropy(unsure)[0, 0] == pytest.approx(np.log(3), abs=1e-6)


def test_tiled_uncertainty_equals_the_whole_images(inferred) -> None:
    plan, ingested, _ = inferred
    stored = zarr.open_array(str(Path(plan.jobs[0].store) / "uncertainty" / "0"), mode="r")
    assert stored.dtype == np.float16
    expected = _whole_image_entropy(plan, ingested)
    np.testing.assert_allclose(stored[:].astype(np.float32), expected, atol=1e-3)
    assert expected.max() > UNCERTAIN_NATS, "some pixels should be uncertain, so the comparison means something"


def test_mean_and_share_above_the_threshold_are_the_whole_images(inferred) -> None:
    plan, ingested, result = inferred
    expected = _whole_image_entropy(plan, ingested)
    assert result.mean_uncertainty == pytest.approx(float(expected.mean()), abs=1e-5)
    assert result.uncertain_fraction == pytest.approx(float((expected > UNCERTAIN_NATS).mean()), abs=2 / expected.size)


def test_gaussian_stitching_writes_the_uncertainty_too(tmp_path: Path) -> None:
    plan, ingested, settings = _plan(tmp_path, "gaussian", save_uncertainty=True)
    result = infer_image(plan.jobs[0], ingested, plan, settings.inference)
    stored = zarr.open_array(str(Path(plan.jobs[0].store) / "uncertainty" / "0"), mode="r")
    assert result.mean_uncertainty == pytest.approx(float(stored[:].astype(np.float64).mean()), abs=1e-3)


def test_finalize_builds_the_uncertainty_pyramid(inferred, monkeypatch: pytest.MonkeyPatch) -> None:
    plan, ingested, _ = inferred
    monkeypatch.setattr("segpipe.stages.finalize.level_count", lambda height, width: 2)  # a small image has 1 level
    finalized = finalize_image(plan.jobs[0], plan, ingested.stats)
    assert finalized.uncertainty == str(Path(plan.jobs[0].store) / "uncertainty" / "0")
    level1 = zarr.open_array(str(Path(plan.jobs[0].store) / "uncertainty" / "1"), mode="r")
    assert level1.shape == (-(-HEIGHT // 2), -(-WIDTH // 2))


def test_without_the_option_nothing_is_measured_or_written(tmp_path: Path) -> None:
    plan, ingested, settings = _plan(tmp_path)
    result = infer_image(plan.jobs[0], ingested, plan, settings.inference)
    assert result.mean_uncertainty is None
    assert not (Path(plan.jobs[0].store) / "uncertainty").exists()


def test_the_option_changes_the_infer_key_only_when_on(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    off, _, _ = _plan(tmp_path / "a")
    on, _, _ = _plan(tmp_path / "b", save_uncertainty=True)
    assert off.jobs[0].infer_key != on.jobs[0].infer_key


def test_the_canary_watches_the_mean_uncertainty() -> None:
    from segpipe.stages.results import PARTITION, check_canary

    row = {"role": "canary", "mean_dice": 0.9, "fraction_bg": 0.5, "fraction_fg": 0.5}
    history = [{**row, "run_id": "a", PARTITION: "2026-01-01", "mean_uncertainty": 0.1}]
    tonight = [{**row, "run_id": "b", PARTITION: "2026-01-02", "mean_uncertainty": 0.3}]
    checks = {c.metric: c for c in check_canary(history, tonight, ("bg", "fg"), tolerance=0.02)}
    assert checks["mean_uncertainty"].alert


def _finished(plan: BatchPlan, ingested: Ingested, result: Inferred) -> ImageReport:
    finalized = finalize_image(plan.jobs[0], plan, ingested.stats)
    return image_report(plan.jobs[0], ingested, result, finalized, None)


def _chunk_means(values: np.ndarray) -> list[tuple[float, Region]]:
    """Each chunk's mean entropy from the whole array: the oracle for the streamed figures."""
    return [
        (float(values[r.y0 : r.y1, r.x0 : r.x1].mean(dtype=np.float64)), r) for r in chunk_grid(HEIGHT, WIDTH, CHUNK)
    ]


def test_the_report_shows_the_most_uncertain_chunks_without_truth(inferred, tmp_path: Path) -> None:
    plan, ingested, result = inferred
    report = _finished(plan, ingested, result)
    stored = zarr.open_array(str(Path(plan.jobs[0].store) / "uncertainty" / "0"), mode="r")[:].astype(np.float32)
    expected = sorted(_chunk_means(stored), key=lambda m: -m[0])[:2]
    assert expected[0][0] > expected[-1][0], "the chunks should differ, so the ranking means something"
    regions = most_uncertain(chunk_uncertainties(report, plan.chunk), 2)
    assert [r.region for r in regions] == [region for _, region in expected]
    assert [r.mean_uncertainty for r in regions] == pytest.approx([mean for mean, _ in expected], abs=1e-6)
    first = expected[0][1]
    share = float((stored[first.y0 : first.y1, first.x0 : first.x1] > UNCERTAIN_NATS).mean())
    assert regions[0].uncertain_fraction == pytest.approx(share)

    out = str(tmp_path / "batch")
    written = write_batch_report(plan, out, [report], EvalConfig(), worst=2)
    folder = Path(out) / "report"
    assert sorted(Path(url).name for url in written) == ["index.html", "uncertain_1_scan.png", "uncertain_2_scan.png"]
    picture = np.asarray(Image.open(folder / "uncertain_1_scan.png").convert("RGB"))
    assert picture.shape[1] >= 2 * 256  # the region and its heat side by side, enlarged
    page = (folder / "index.html").read_text()
    table = page[page.index('<table id="uncertain">') :].split("</table>")[0]
    assert f"y {first.y0}..{first.y1}, x {first.x0}..{first.x1}" in table
    assert f"{regions[0].mean_uncertainty:.3f}" in table
    assert 'src="uncertain_1_scan.png"' in table
    assert "Mean uncertainty (nats)" in page
    assert f"{report.mean_uncertainty:.3f}" in page


def test_without_the_option_the_report_has_no_uncertain_regions(tmp_path: Path) -> None:
    plan, ingested, settings = _plan(tmp_path)
    report = _finished(plan, ingested, infer_image(plan.jobs[0], ingested, plan, settings.inference))
    assert list(chunk_uncertainties(report, plan.chunk)) == []
    written = write_batch_report(plan, str(tmp_path / "batch"), [report], EvalConfig(), worst=2)
    assert [Path(url).name for url in written] == ["index.html"]
    assert "Most uncertain regions" not in (tmp_path / "batch" / "report" / "index.html").read_text()


def test_the_figures_reach_the_results_table_and_mlflow(inferred) -> None:
    plan, ingested, result = inferred
    report = _finished(plan, ingested, result)
    assert report.mean_uncertainty == result.mean_uncertainty
    assert report.uncertain_fraction is not None
    run = RunInfo("r1", datetime(2026, 1, 2, tzinfo=UTC), plan.model)
    (row,) = result_rows(run, [report], plan.model.card.class_names)
    assert (row["mean_uncertainty"], row["uncertain_fraction"]) == (report.mean_uncertainty, report.uncertain_fraction)
    metrics = image_metrics(report, plan.model.card.class_names)
    assert metrics["mean_uncertainty"] == pytest.approx(report.mean_uncertainty)
    assert metrics["uncertain_fraction"] == pytest.approx(report.uncertain_fraction)


def test_the_canary_watches_the_share_of_uncertain_pixels() -> None:
    from segpipe.stages.results import PARTITION, check_canary

    row = {"role": "canary", "mean_dice": 0.9, "fraction_bg": 0.5, "fraction_fg": 0.5, "mean_uncertainty": 0.2}
    history = [{**row, "run_id": "a", PARTITION: "2026-01-01", "uncertain_fraction": 0.05}]
    tonight = [{**row, "run_id": "b", PARTITION: "2026-01-02", "uncertain_fraction": 0.15}]
    checks = {c.metric: c for c in check_canary(history, tonight, ("bg", "fg"), tolerance=0.02)}
    assert checks["uncertain_fraction"].alert
    assert not checks["mean_uncertainty"].alert
