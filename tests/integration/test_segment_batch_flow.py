"""The real batch flow: Prefect (test server), Dask (LocalCluster processes), MLflow (sqlite store)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from flows.segment_batch import segment_batch
from segpipe.errors import InputError
from segpipe.metrics import confusion_matrix, scores
from tests.integration.conftest import write_image_pair

pytestmark = pytest.mark.integration


def _settings(out: Path, **tiling: int) -> dict:
    return {"out": str(out), "tiling": {"chunk": 256, "tile": 128, **tiling}, "inference": {"batch_size": 4}}


def _mlflow(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def test_batch_of_tiff_and_zarr_matches_truth_and_is_logged(tmp_path: Path, dask_cluster: str) -> None:
    first = write_image_pair(tmp_path, "odd_size", 700, 523, seed=1)
    second = write_image_pair(tmp_path, "small", 190, 260, seed=2)
    zarr_input = str(tmp_path / "small.zarr")
    zarr.create_array(zarr_input, data=tifffile.imread(second[0]), chunks=(64, 64))
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    report = segment_batch(
        [first[0], zarr_input],
        [first[1], second[1]],
        _settings(tmp_path / "out"),
        cluster=dask_cluster,
        tracking_uri=tracking_uri,
        experiment="integration",
    ).to_json()

    confusions = []
    for entry, (image, truth) in zip(report["images"], [first, second], strict=True):
        mask = zarr.open_array(entry["mask"], mode="r")
        truth_labels = tifffile.imread(truth)
        assert mask.shape == truth_labels.shape  # same height and width as the input, any size
        confusion = confusion_matrix(truth_labels, mask[:], 2)
        confusions.append(confusion)
        assert entry["iou"] == pytest.approx(list(scores(confusion).iou))
        assert entry["dice"][1] > 0.9, entry
        assert (tmp_path / "out" / Path(image).stem / "preview.png").stat().st_size > 0
    assert report["batch"]["iou"] == pytest.approx(list(scores(confusions[0] + confusions[1]).iou))

    client = _mlflow(tracking_uri)
    parent = client.get_run(report["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.params["chunk"] == "256"
    assert parent.data.params["halo"] == "28"
    assert parent.data.metrics["mean_dice"] == pytest.approx(report["batch"]["mean_dice"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 2
    for child in children:
        assert {"dice_nucleus", "iou_background", "megapixels_per_second", "seconds_infer"} <= set(child.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert artifacts == {"metrics.json", "preview.png"}
    batch_json = json.loads((tmp_path / "out" / "batch.json").read_text())
    assert batch_json["mean_dice"] == pytest.approx(report["batch"]["mean_dice"])
    per_image_mean = np.nanmean([scores(c).mean_dice for c in confusions])
    assert report["batch"]["per_image"]["mean_dice"] == pytest.approx(per_image_mean)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {
        "report/per_image.csv",
        "report/summary.csv",
        "report/summary.json",
        "report/confusion.png",
        "report/class_scores.png",
    } <= logged
    assert len([p for p in logged if p.startswith("report/worst_")]) == 2  # overlays of the two images
    rows = (tmp_path / "out" / "report" / "per_image.csv").read_text().splitlines()
    assert rows[0].startswith("image,")
    assert len(rows) == 3

    from tests.bad_inputs import invoke

    code, _ = invoke(["report", parent.info.run_id, "--tracking-uri", tracking_uri])
    assert code == 0


def test_model_is_loaded_once_per_worker(tmp_path: Path, dask_cluster: str) -> None:
    from distributed import Client

    image, truth = write_image_pair(tmp_path, "many_chunks", 512, 512, seed=3)
    segment_batch([image], [truth], _settings(tmp_path / "out", chunk=64, tile=64), cluster=dask_cluster)
    with Client(dask_cluster) as client:
        loads = client.run(lambda: __import__("segpipe.models").models.loaded_models())
    per_worker = [len(models) for models in loads.values()]
    assert all(n <= 1 for n in per_worker), loads  # 64 chunk tasks, at most one load per worker process
    assert sum(per_worker) >= 1


def test_real_nuclei_are_segmented(tmp_path: Path, real_nuclei: tuple[str, str], dask_cluster: str) -> None:
    """DSB 2018 nuclei (stardist's sample), instance truth counted as foreground: a model trained only on
    synthetic nuclei must still find them."""
    image, truth = real_nuclei
    settings = _settings(tmp_path / "out")
    settings["evaluation"] = {"truth_instances": True}
    report = segment_batch([image], [truth], settings, cluster=dask_cluster).to_json()
    (entry,) = report["images"]
    assert entry["dice"][1] > 0.85, entry
    thresholds = [row["threshold"] for row in entry["objects"]]
    assert thresholds == pytest.approx([0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9])
    assert entry["objects"][0]["f1"] > 0.5
    assert entry["objects"][0]["f1"] >= entry["objects"][-1]["f1"]
    assert report["batch"]["objects"][0]["tp"] == entry["objects"][0]["tp"]
    truth_fg = tifffile.imread(truth) > 0
    predicted = zarr.open_array(entry["mask"], mode="r")[:]
    assert np.isclose(
        entry["dice"][1], 2 * np.sum(truth_fg & (predicted == 1)) / (truth_fg.sum() + (predicted == 1).sum())
    )


def test_bad_truth_fails_before_anything_is_written(tmp_path: Path, dask_cluster: str) -> None:
    image, _ = write_image_pair(tmp_path, "image", 128, 128, seed=4)
    _, wrong_truth = write_image_pair(tmp_path, "other", 64, 128, seed=5)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="other_truth.tif: truth is 64 x 128"):
        segment_batch([image], [wrong_truth], _settings(out), cluster=dask_cluster)
    assert not out.exists()


def test_without_truth_no_metrics_are_computed(tmp_path: Path, dask_cluster: str) -> None:
    image, _ = write_image_pair(tmp_path, "no_truth", 300, 200, seed=6)
    report = segment_batch([image], None, _settings(tmp_path / "out"), cluster=dask_cluster).to_json()
    (entry,) = report["images"]
    assert "iou" not in entry
    assert "iou" not in report["batch"]
    assert zarr.open_array(entry["mask"], mode="r").shape == (300, 200)
    assert os.path.exists(os.path.join(tmp_path, "out", "no_truth", "metrics.json"))


def test_rerun_computes_nothing_and_is_not_ranked_on_speed(tmp_path: Path, dask_cluster: str) -> None:
    from segpipe.runs import compare_runs
    from segpipe.tracking import fetch_runs

    image, truth = write_image_pair(tmp_path, "again", 256, 256, seed=8)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = [
        segment_batch(
            [image], [truth], _settings(tmp_path / "out"), cluster=dask_cluster, tracking_uri=tracking_uri
        ).to_json()
        for _ in range(2)
    ]
    first, again = (run["batch"] for run in runs)
    assert first["megapixels_computed"] == pytest.approx(256 * 256 / 1e6)
    assert first["megapixels_per_second"] > 0
    assert runs[1]["images"][0]["skipped"], "the re-run did not skip the finished image"
    assert again["megapixels_computed"] == 0
    assert again["megapixels_per_second"] is None
    assert runs[1]["images"][0]["megapixels_per_second"] is None
    logged = fetch_runs(tracking_uri, [runs[1]["mlflow_run_id"], runs[0]["mlflow_run_id"]])
    assert "megapixels_per_second" not in logged[0]["metrics"]
    assert logged[0]["metrics"]["megapixels_computed"] == 0
    assert logged[0]["params"]["cluster"].startswith("none started")  # nothing to compute: no cluster either
    speed_row = next(line for line in compare_runs(logged).splitlines() if line.startswith("megapixels_per_second"))
    assert speed_row.split()[1] == "-", f"the re-run shows no speed: {speed_row}"
    assert "*" not in speed_row, f"one speed, nothing to rank: {speed_row}"


def test_each_image_run_is_logged_as_its_image_is_collected(
    tmp_path: Path, dask_cluster: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flow hands each committed image to the live MLflow log; the last step only finishes the batch run."""
    import flows.batch
    from tests.unit.test_live_log import Opener, Recorder

    tracker = Recorder("t")
    monkeypatch.setattr(flows.batch, "tracker_for", lambda uri, experiment: Opener(tracker)())
    monkeypatch.setattr(flows.batch, "warm_up", lambda uri, experiment: None)  # no logging process for the recorder
    monkeypatch.setattr(flows.batch, "discard_warm_up", lambda uri, experiment: None)
    pairs = [write_image_pair(tmp_path, f"im{i}", 96, 130, seed=i) for i in range(3)]
    result = segment_batch(
        [image for image, _ in pairs],
        [truth for _, truth in pairs],
        _settings(tmp_path / "out"),
        cluster=dask_cluster,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    handed = [call[1] for call in tracker.calls if call[0] == "log_images"]
    assert handed == [("im0",), ("im1",), ("im2",)], "one call per image as it was collected, none left for the end"
    assert tracker.calls[-1] == ("end", "t-batch", "FINISHED")
    assert result.mlflow_run_id == "t-batch"
    assert dict(result.image_run_ids) == {"im0": "t-im0", "im1": "t-im1", "im2": "t-im2"}
