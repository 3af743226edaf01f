"""The command line's error paths (fail before Prefect starts, write nothing) and ``segpipe eval --json``."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile

from segpipe.cli import main
from segpipe.errors import InputError, ModelError
from segpipe.metrics import confusion_matrix, scores


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    image = np.random.default_rng(0).integers(100, 4000, (40, 50)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "truth.tif", np.zeros((40, 50), np.uint8))
    tifffile.imwrite(tmp_path / "short_truth.tif", np.zeros((41, 50), np.uint8))
    (tmp_path / "notes.tif").write_text("not an image\n")
    (tmp_path / "model.pt").write_bytes(pickle.dumps({"weights": [0.5]}))
    return tmp_path


def _expect_one_error_line(capsys: pytest.CaptureFixture[str], rc: int, names: Path, code: int) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert rc == code != 0
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("segpipe: error: ")
    assert str(names) in lines[0]
    assert captured.out == ""
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "names", "code"),
    [
        (["run", "{d}/missing.tif"], "{d}/missing.tif", InputError.exit_code),
        (
            ["run", "{d}/img.tif", "--truth", "{d}/short_truth.tif"],
            "{d}/short_truth.tif",
            InputError.exit_code,
        ),
        (["run", "{d}/img.tif", "--model", "{d}/model.pt"], "{d}/model.pt", ModelError.exit_code),
        (["run", "{d}/img.tif", "{d}/notes.tif"], "{d}/notes.tif", InputError.exit_code),
        (
            ["run", "{d}/img.tif", "--truth", "{d}/truth.tif", "{d}/truth.tif"],
            "2 truths",
            InputError.exit_code,
        ),
        (["run", "{d}/img.tif", "--chunk", "0"], "--chunk", 2),
        (["run", "{d}/img.tif", "--batch-size", "0"], "--batch-size", 2),
        (["run", "{d}/img.tif", "--tracking-uri", "nonsense"], "nonsense", 2),
    ],
    ids=[
        "missing-image",
        "truth-size",
        "non-model",
        "non-image",
        "truth-count",
        "chunk-0",
        "batch-0",
        "bad-uri",
    ],
)
def test_run_errors_print_one_line_and_write_nothing(workdir, capsys, monkeypatch, argv, names, code) -> None:
    opened: list[str] = []  # stores MLflow's child was told to open (it would create mlflow.db, in a race)
    monkeypatch.setattr("segpipe.tracking.warm_up", lambda uri, experiment: opened.append(uri))
    out = workdir / "out"
    before = sorted(p.name for p in workdir.iterdir())
    rc = main([a.format(d=workdir) for a in argv] + ["--out", str(out)])
    _expect_one_error_line(capsys, rc, Path(names.format(d=workdir)), code)
    assert not out.exists()
    assert sorted(p.name for p in workdir.iterdir()) == before  # no mlflow.db, no partial outputs
    assert opened == []


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["eval", "{d}/notes.tif", "{d}/truth.tif"], "{d}/notes.tif"),
        (["eval", "{d}/truth.tif", "{d}/notes.tif"], "{d}/notes.tif"),
        (["eval", "{d}/truth.tif", "{d}/missing.tif"], "{d}/missing.tif"),
        (["eval", "{d}/truth.tif", "{d}/short_truth.tif"], "{d}/short_truth.tif"),
    ],
    ids=["prediction-not-image", "truth-not-image", "truth-missing", "size-mismatch"],
)
def test_eval_errors_print_one_line(workdir, capsys, argv, names) -> None:
    rc = main([a.format(d=workdir) for a in argv])
    _expect_one_error_line(capsys, rc, Path(names.format(d=workdir)), InputError.exit_code)


def test_eval_json_matches_metrics_scores(workdir, capsys) -> None:
    rng = np.random.default_rng(11)
    truth = rng.choice([0, 2, 3], (33, 45)).astype(np.uint8)  # class 1 occurs nowhere: null in JSON
    prediction = np.where(rng.random(truth.shape) < 0.8, truth, rng.choice([0, 2, 3], truth.shape)).astype(np.uint8)
    tifffile.imwrite(workdir / "pred.tif", prediction, tile=(16, 16))
    tifffile.imwrite(workdir / "gt.tif", truth)
    rc = main(["eval", str(workdir / "pred.tif"), str(workdir / "gt.tif"), "--json", "--chunk", "10"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(captured.out)
    expected = scores(confusion_matrix(truth, prediction, 4)).to_json()
    for key in ("iou", "dice", "mean_iou", "mean_dice", "confusion_matrix", "pixels", "pixel_accuracy"):
        assert result[key] == expected[key], key  # JSON floats round-trip exactly
    assert result["iou"][1] is None
    assert result["dice"][1] is None
    assert result["pixels"] == truth.size
    assert result["confusion_matrix"] == confusion_matrix(truth, prediction, 4).tolist()


def test_eval_json_with_ignore_index_and_num_classes(workdir, capsys) -> None:
    rng = np.random.default_rng(12)
    truth = rng.integers(0, 2, (20, 30)).astype(np.uint8)
    truth[:5] = 255
    prediction = rng.integers(0, 2, (20, 30)).astype(np.uint8)
    tifffile.imwrite(workdir / "pred.tif", prediction)
    tifffile.imwrite(workdir / "gt.tif", truth)
    rc = main(
        [
            "eval",
            str(workdir / "pred.tif"),
            str(workdir / "gt.tif"),
            "--json",
            "--ignore-index",
            "255",
            "--num-classes",
            "2",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(captured.out)
    assert result["confusion_matrix"] == confusion_matrix(truth, prediction, 2, ignore_index=255).tolist()
    assert result["pixels"] == 15 * 30


def test_report_compares_runs_and_marks_the_best(tmp_path, capsys) -> None:
    """``segpipe report`` reads batch runs back from MLflow and prints one column per run."""
    from mlflow.tracking import MlflowClient

    from segpipe.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("cmp", artifact_location=(tmp_path / "a").as_uri())
    ids = []
    for name, dice in (("model-a", 0.81), ("model-b", 0.92)):
        run = client.create_run(experiment, run_name=name)
        client.log_param(run.info.run_id, "model", name)
        client.log_metric(run.info.run_id, "mean_dice", dice)
        ids.append(run.info.run_id)
    assert main(["report", *ids, "--tracking-uri", uri]) == 0
    table = capsys.readouterr().out
    assert "model-a" in table
    assert "model-b" in table
    row = next(line for line in table.splitlines() if line.startswith("mean_dice"))
    assert row.split()[1:] == ["0.8100", "0.9200*"]
    assert main(["report", "--experiment", "cmp", "--tracking-uri", uri]) == 0  # latest runs, no ids
    assert main(["report", "no-such-run", "--tracking-uri", uri]) == 5


def test_credentials_never_reach_reports_or_logs() -> None:
    from segpipe.storage import public_url

    assert public_url("https://alice:s3cret@mlflow.example.org/api") == "https://mlflow.example.org/api"
    assert public_url("http://token@host:5000") == "http://host:5000"
    assert public_url("sqlite:////data/mlflow.db") == "sqlite:////data/mlflow.db"


def test_version_and_help_say_what_a_user_needs(capsys: pytest.CaptureFixture[str]) -> None:
    from segpipe import __version__

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"segpipe {__version__}"
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    assert "examples:" in text
    assert "segpipe run scene.tif" in text
    assert "preview.png" in text
    assert "exit codes:" in text
    assert "4 output location" in text
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    assert "PRED" in text
    assert ".ome.zarr" in text
    assert "same height and width" in text


def test_table_has_no_blank_first_or_whitespace_only_lines(capsys: pytest.CaptureFixture[str]) -> None:
    from segpipe.cli.output import print_table
    from segpipe.stages.evaluate import Evaluation
    from segpipe.stages.report import ImageReport
    from segpipe.stages.results import BatchResult, summarize_batch

    matrix = scores(np.array([[9, 1], [1, 9]]))
    evaluation = Evaluation(matrix, matrix.band(), matrix.band())
    image = ImageReport(
        "a",
        "a.tif",
        "a_truth.tif",
        "out/a/a.ome.zarr/labels/mask/0",
        "out/a/a.ome.zarr",
        (1, 4, 5),
        1.0,
        0.0,
        None,
        1,
        0,
        {},
        evaluation,
        skipped=True,
    )
    batch = summarize_batch([image], [], ("background", "nucleus"), 1.0)
    print_table(BatchResult((image,), batch, "out", "abc", (), "sqlite:///x.db"), 1.0)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("a.tif")
    assert "nothing computed" in lines[0]
    assert all(line == "" or line.strip() for line in lines)  # blank separators only, never spaces alone
    assert "  nucleus" in "\n".join(lines)


def test_eval_takes_an_ome_zarr_folder_and_names_its_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import zarr

    from segpipe.io.omezarr import write_metadata

    store = tmp_path / "scene.ome.zarr"
    labels = np.zeros((32, 32), np.uint8)
    labels[8:24, 8:24] = 1
    zarr.create_array(store / "0", data=labels[None].astype(np.uint16))
    zarr.create_array(store / "labels" / "mask" / "0", data=labels)
    write_metadata(str(store), "scene", 1, 1, ("background", "field"))
    tifffile.imwrite(tmp_path / "truth.tif", labels)
    assert main(["eval", str(store), str(tmp_path / "truth.tif")]) == 0
    out = capsys.readouterr().out
    assert "field" in out
    assert "class_1" not in out
    assert "1.0000" in out
    assert main(["eval", str(store / "labels"), str(tmp_path / "truth.tif")]) == 2
    assert "without labels/mask/0" in capsys.readouterr().err


def test_run_expands_globs_and_finds_truths_by_pattern(tmp_path: Path) -> None:
    import argparse

    from segpipe.cli.run import expand_images

    for name in ("b.tif", "a.tif", "a_truth.tif", "b_truth.tif"):
        tifffile.imwrite(tmp_path / name, np.zeros((8, 8), np.uint8))
    args = argparse.Namespace(images=[f"{tmp_path}/*.tif"], truth=None, truth_pattern="{dir}/{stem}_truth.tif")
    images, truths = expand_images(args)
    assert images == [str(tmp_path / "a.tif"), str(tmp_path / "b.tif")]  # the truths the glob matched are left out
    assert truths == [str(tmp_path / "a_truth.tif"), str(tmp_path / "b_truth.tif")]
    plain = argparse.Namespace(images=[str(tmp_path / "a.tif")], truth=None, truth_pattern=None)
    assert expand_images(plain) == ([str(tmp_path / "a.tif")], None)
    with pytest.raises(InputError, match="matches no image"):
        expand_images(argparse.Namespace(images=[f"{tmp_path}/*.png"], truth=None, truth_pattern=None))


def test_the_command_exits_with_the_error_code_and_its_one_line(tmp_path: Path) -> None:
    """``python -m segpipe.cli`` ends through ``run_and_exit`` (os._exit after the atexit handlers): the exit code
    and the flushed stderr line must survive it."""
    import subprocess
    import sys

    missing = tmp_path / "missing.tif"
    done = subprocess.run(
        [sys.executable, "-m", "segpipe.cli", "run", str(missing), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"segpipe: error: {missing}: no such file or directory"]
    assert not (tmp_path / "out").exists()
