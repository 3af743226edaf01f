"""The README's first command, as a user runs it: ``segpipe demo --json`` in a subprocess, started with its own
LocalCluster, against the session's Prefect server and a fresh MLflow sqlite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

pytestmark = pytest.mark.integration


def test_demo_json(tmp_path: Path, prefect_server: str) -> None:
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    cwd.mkdir()
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "SEGPIPE_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [
        sys.executable,
        "-m",
        "segpipe.cli",
        "demo",
        "--size",
        "640",
        "--workdir",
        str(tmp_path / "demo"),
        "--chunk",
        "256",
        "--workers",
        "2",
        "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)  # stdout holds exactly one JSON object
    (entry,) = report["images"]
    assert {"image", "mask", "iou", "dice", "mean_iou", "mean_dice"} <= set(entry)
    assert zarr.open_array(entry["mask"], mode="r").shape == (640, 640)
    assert entry["mean_dice"] > 0.95
    assert report["batch"]["mean_dice"] == pytest.approx(entry["mean_dice"])
    assert report["tracking_uri"] == f"sqlite:///{home.resolve() / 'mlflow.db'}"  # the one per-user store
    assert (home / "mlartifacts").is_dir(), "artifacts belong beside the per-user store"
    assert not list(cwd.iterdir()), "nothing may be written to the working directory"
    assert "temporary server" not in done.stderr
    assert "Creating initial MLflow database" not in done.stderr

    from mlflow.tracking import MlflowClient

    run = MlflowClient(report["tracking_uri"]).get_run(report["mlflow_run_id"])
    assert run.data.metrics["mean_dice"] == pytest.approx(entry["mean_dice"])
