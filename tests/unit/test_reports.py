"""Reports (segpipe/reports/): CSV and JSON contents, PNGs that open, overlay colours, the report files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segpipe.errors import InputError
from segpipe.metrics import Scores, confusion_matrix, scores
from segpipe.objects import object_metrics
from segpipe.reports import (
    OVERLAY_COLOURS,
    ImageResult,
    column_name,
    overlay,
    plot_class_scores,
    plot_confusion,
    score_summary,
    worst_images,
    write_overlay,
    write_per_image_csv,
    write_report,
    write_summary_csv,
    write_summary_json,
)

CLASSES = ("background", "Nucleus (large)", "membrane")


def results() -> tuple[list[ImageResult], dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Three images: a perfect one, one with errors, one where class 2 is absent from truth and prediction."""
    rng = np.random.default_rng(4)
    truth = rng.integers(0, 3, (32, 48)).astype(np.uint8)
    noisy = np.where(rng.random(truth.shape) < 0.3, (truth + 1) % 3, truth).astype(np.uint8)
    two = np.minimum(truth, 1)
    cases = {"perfect": (truth, truth), "noisy": (truth, noisy), "no membrane": (two, two)}
    out, thumbs = [], {}
    for name, (t, p) in cases.items():
        out.append(ImageResult(name, confusion_matrix(t, p, 3), objects=object_metrics(t, p)))
        thumbs[name] = (rng.random(t.shape), p, t)
    return out, thumbs


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_per_image_csv_columns_and_values(tmp_path: Path) -> None:
    items, _ = results()
    rows = read_csv(write_per_image_csv(tmp_path / "per_image.csv", items, CLASSES))
    assert [r["image"] for r in rows] == ["perfect", "noisy", "no membrane"]
    columns = list(rows[0])
    assert columns[:4] == ["image", "iou_background", "iou_nucleus_large", "iou_membrane"]
    for expected in (
        "dice_membrane",
        "precision_background",
        "recall_nucleus_large",
        "mean_iou",
        "mean_dice",
        "pixel_accuracy",
        "frequency_weighted_iou",
        "pixels",
        "object_f1",
        "object_f1_mean",
    ):
        assert expected in columns
    noisy = scores(items[1].confusion)
    assert float(rows[1]["iou_nucleus_large"]) == noisy.iou[1]  # full precision, exactly
    assert float(rows[1]["mean_dice"]) == noisy.mean_dice
    assert int(rows[1]["pixels"]) == 32 * 48
    assert rows[0]["mean_iou"] == "1.0"
    assert rows[0]["object_f1"] == "1.0"
    assert rows[2]["iou_membrane"] == ""
    assert rows[2]["dice_membrane"] == ""  # NaN: empty cell


def test_summary_csv_and_json(tmp_path: Path) -> None:
    items, _ = results()
    summary = score_summary(items, CLASSES)
    rows = read_csv(write_summary_csv(tmp_path / "summary.csv", summary))
    assert [r["class"] for r in rows] == [*CLASSES, "mean"]
    micro = scores(np.sum([r.confusion for r in items], axis=0))
    assert float(rows[1]["iou"]) == micro.iou[1]
    assert int(rows[2]["truth_pixels"]) == micro.truth_pixels[2]
    assert rows[2]["images_scored"] == "2"  # membrane is absent from the third image
    assert float(rows[-1]["dice"]) == micro.mean_dice
    assert float(rows[2]["per_image_iou"]) == pytest.approx((1.0 + scores(items[1].confusion).iou[2]) / 2)
    loaded = json.loads(write_summary_json(tmp_path / "summary.json", summary).read_text())
    assert loaded["classes"] == list(CLASSES)
    assert loaded["images"] == 3
    assert loaded["worst_by_mean_dice"][0] == "noisy"
    assert loaded["objects"][0]["threshold"] == 0.5
    assert loaded["micro"]["confusion_matrix"] == [list(row) for row in micro.confusion_matrix]
    only_nan = json.loads(
        write_summary_json(
            tmp_path / "nan.json", score_summary([ImageResult("void", np.zeros((3, 3), np.int64))], CLASSES)
        ).read_text()
    )
    assert only_nan["micro"]["mean_iou"] is None
    assert only_nan["objects"] is None


def test_plots_are_pngs_of_sensible_size(tmp_path: Path) -> None:
    items, _ = results()
    confusion = np.sum([r.confusion for r in items], axis=0)
    for path in (
        plot_confusion(tmp_path / "confusion.png", confusion, CLASSES),
        plot_class_scores(tmp_path / "bars.png", scores(confusion), CLASSES),
    ):
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert 400 <= image.width <= 2000
            assert 300 <= image.height <= 2000
            assert len(set(image.convert("RGB").getdata())) > 20  # drawn, not blank
    many = [f"class {i}" for i in range(12)]
    big = plot_confusion(tmp_path / "big.png", np.eye(12, dtype=np.int64) * 5, many)
    with Image.open(big) as image:
        assert image.width > 1000
    with pytest.raises(InputError, match="class names"):
        plot_confusion(tmp_path / "bad.png", confusion, CLASSES[:2])


def test_overlay_colours_each_outcome() -> None:
    truth = np.array([[0, 0, 1, 1, 2, 255]], np.uint8)
    prediction = np.array([[0, 1, 1, 0, 1, 1]], np.uint8)
    rgb = overlay(np.zeros(truth.shape), prediction, truth, ignore_index=255, alpha=1.0)
    assert rgb.shape == (1, 6, 3)
    assert rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (0, 0, 0)  # true negative: the image
    assert tuple(rgb[0, 1]) == OVERLAY_COLOURS["FP"]
    assert tuple(rgb[0, 5]) == (0, 0, 0)  # ignored
    inner_truth = np.zeros((7, 7), np.uint8)
    inner_truth[1:6, 1:6] = 1
    rgb = overlay(np.full((7, 7), 0.5), inner_truth, inner_truth, alpha=1.0)
    assert tuple(rgb[3, 3]) == OVERLAY_COLOURS["TP"]
    assert tuple(rgb[1, 1]) == (255, 255, 255)  # outline
    missed = overlay(np.zeros((7, 7)), np.zeros((7, 7), np.uint8), inner_truth, alpha=1.0)
    assert tuple(missed[3, 3]) == OVERLAY_COLOURS["FN"]
    wrong = overlay(np.zeros((7, 7)), inner_truth * 2, inner_truth, alpha=1.0)
    assert tuple(wrong[3, 3]) == OVERLAY_COLOURS["wrong class"]
    with pytest.raises(InputError, match="equal shapes"):
        overlay(np.zeros((3, 3)), np.zeros((3, 4)), np.zeros((3, 3)))


def test_write_overlay_enlarges_small_thumbnails(tmp_path: Path) -> None:
    truth = np.zeros((40, 60), np.uint8)
    truth[10:30, 10:30] = 1
    image = np.linspace(0, 1, 2400).reshape(40, 60)
    path = write_overlay(tmp_path / "o.png", image, np.roll(truth, 3, 1), truth, title="scene 1")
    with Image.open(path) as png:
        assert png.mode == "RGB"
        assert png.size == (500, 7 * 40 + 40)  # 7x nearest, legend strip of two lines
        pixels = np.asarray(png)
    picture = pixels[: 7 * 40, : 7 * 60]
    np.testing.assert_array_equal(picture[::7, ::7], overlay(image, np.roll(truth, 3, 1), truth))
    legend = {tuple(c) for c in pixels[7 * 40 :].reshape(-1, 3)}
    assert set(OVERLAY_COLOURS.values()) <= legend


def test_worst_images_and_report_files(tmp_path: Path) -> None:
    items, thumbs = results()
    void = ImageResult("void", np.zeros((3, 3), np.int64))
    assert [r.name for r in worst_images([void, *items], 2)] == ["noisy", "perfect"]
    assert [r.name for r in worst_images([void, *items], 10)][-1] == "void"  # no score: last
    from_json = ImageResult(
        "from json", void.confusion, Scores.from_json(scores(void.confusion).to_json())
    )  # null: NaN
    assert worst_images([from_json, *items], 1)[0].name == "noisy"
    paths = write_report(tmp_path / "report", items, CLASSES, load=thumbs.__getitem__, worst=2)
    assert [p.name for p in paths["overlays"]] == ["worst_1_noisy.png", "worst_2_perfect.png"]
    for key in ("per_image_csv", "summary_csv", "summary_json", "confusion_png", "class_scores_png"):
        assert paths[key].is_file()
        assert paths[key].stat().st_size > 100
    assert not list((tmp_path / "report").glob("*.tmp"))


def test_column_names() -> None:
    assert column_name("Nucleus (large)") == "nucleus_large"
    assert column_name("??") == "class"
    with pytest.raises(InputError, match="collide"):
        write_per_image_csv("unused.csv", results()[0], ("a b", "a-b", "c"))
