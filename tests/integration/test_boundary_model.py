"""The second built-in model as a user runs it: ``segpipe run IMG --model builtin:boundary --objects --json`` in a
subprocess, on a small synthetic nuclei image, against the session's Prefect server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

from segpipe import synthetic

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def boundary_run(tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> dict:
    tmp_path = tmp_path_factory.mktemp("boundary")
    image, _ = synthetic.write_sample(tmp_path / "data", 256, seed=3)
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "SEGPIPE_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "segpipe.cli", "run", str(image), "--model", "builtin:boundary", "--objects"]
    command += ["--out", str(tmp_path / "out"), "--chunk", "128", "--workers", "1", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (entry,) = json.loads(done.stdout)["images"]
    return entry


def test_the_boundary_model_finds_nuclei_and_no_boundary_objects(boundary_run: dict) -> None:
    background, nucleus, boundary = boundary_run["object_counts"]
    assert nucleus > 10
    assert boundary == 0


def test_the_boundary_models_mask_has_its_three_classes(boundary_run: dict) -> None:
    mask = np.asarray(zarr.open_array(boundary_run["mask"], mode="r")[:])
    assert set(np.unique(mask)) == {0, 1, 2}


def test_the_boundary_models_objects_cover_their_boundary(boundary_run: dict) -> None:
    mask = np.asarray(zarr.open_array(boundary_run["mask"], mode="r")[:])
    ids = np.asarray(zarr.open_array(os.path.join(boundary_run["ome_zarr"], "labels", "objects", "0"), mode="r")[:])
    assert np.count_nonzero(ids[mask == 2]) > 0.9 * np.count_nonzero(mask == 2)


def test_the_boundary_models_table_has_one_row_per_object(boundary_run: dict) -> None:
    table = pq.read_table(io.BytesIO(Path(boundary_run["objects_table"]).read_bytes()))
    assert table.num_rows == boundary_run["object_counts"][1]
