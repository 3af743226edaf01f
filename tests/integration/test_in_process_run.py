"""``segpipe run`` with and without Prefect: the same outputs, byte for byte, and the same MLflow runs.

Without a Prefect API (``--prefect auto`` with none configured, or ``--prefect off``) the batch's steps run in the
command's own process: no server, no flow run. With one, they are the ``segment-batch`` flow's task runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from segpipe.synthetic import write_sample

pytestmark = pytest.mark.integration


def _run(tmp_path: Path, label: str, env: dict[str, str], *extra: str) -> dict:
    image, truth = write_sample(tmp_path / "sample", 384, seed=3)
    command = [sys.executable, "-m", "segpipe.cli", "run", str(image), "--truth", str(truth)]
    command += ["--out", str(tmp_path / label), "--chunk", "128", "--workers", "1", "--json", *extra]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict = json.loads(done.stdout)
    return report


def test_a_run_without_prefect_writes_what_the_flow_writes(tmp_path: Path, prefect_server: str) -> None:
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "SEGPIPE_HOME": str(tmp_path / "home"), "PREFECT_API_URL": prefect_server}
    env.pop("MLFLOW_TRACKING_URI", None)
    flow = _run(tmp_path, "flow", env)  # auto: an API is configured
    here = _run(tmp_path, "here", env, "--prefect", "off")
    masks = [zarr.open_array(report["images"][0]["mask"], mode="r")[:] for report in (flow, here)]
    assert np.array_equal(*masks), "the mask must not depend on the orchestrator"
    assert flow["images"][0]["mean_dice"] == here["images"][0]["mean_dice"]
    client = MlflowClient(flow["tracking_uri"])
    runs = {label: client.get_run(report["mlflow_run_id"]) for label, report in (("flow", flow), ("here", here))}
    metrics = [runs[label].data.metrics for label in ("flow", "here")]
    assert set(metrics[0]) == set(metrics[1])
    scores = [{k: v for k, v in m.items() if not k.startswith("seconds") and "per_second" not in k} for m in metrics]
    assert scores[0] == scores[1], "only the timings may differ"
    assert runs["flow"].data.tags["prefect.flow_run_id"] != ""
    assert runs["here"].data.tags.get("prefect.flow_run_id", "") == ""
    report_files = sorted(p.name for p in (tmp_path / "here" / "report").iterdir())
    assert report_files == sorted(p.name for p in (tmp_path / "flow" / "report").iterdir())
