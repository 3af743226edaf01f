"""``segpipe run --objects`` as an analyst uses the results: the id image, the per-image and per-run object
tables (read with DuckDB over the Hive partitions), the polygons (read with geopandas) and the counts in the
results table, with instance truth matched at any size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import geopandas
import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile
import zarr
from scipy import ndimage

from segpipe.synthetic import write_sample

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("objects_run")
    image, classes = write_sample(tmp / "sample", 768, 4)
    truth = tmp / "sample" / "instances.tif"  # each true nucleus its own id
    tifffile.imwrite(truth, ndimage.label(tifffile.imread(classes) > 0)[0].astype(np.uint16))
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "SEGPIPE_HOME": str(tmp / "home")}
    command = [sys.executable, "-m", "segpipe.cli", "run", str(image), "--truth", str(truth), "--truth-instances"]
    command += ["--out", str(tmp / "out"), "--chunk", "256", "--objects", "--export-geojson", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "out", json.loads(done.stdout)


def test_the_id_image_labels_the_mask_as_scipy_does(run) -> None:
    out, report = run
    (entry,) = report["images"]
    mask = zarr.open_array(entry["mask"], mode="r")[:]
    ids = zarr.open_array(str(Path(entry["ome_zarr"]) / "labels" / "objects" / "0"), mode="r")[:]
    expected, count = ndimage.label(mask == 1)
    np.testing.assert_array_equal(ids, expected)
    assert entry["object_counts"] == [0, count]


def test_duckdb_reads_the_runs_object_rows_by_partition(run) -> None:
    out, report = run
    (entry,) = report["images"]
    rows = duckdb.sql(
        f"SELECT image_name, class_name, count(*) AS n, median(area) AS median_area "
        f"FROM read_parquet('{out}/objects/*/*.parquet', hive_partitioning = true) GROUP BY ALL"
    ).fetchall()
    assert rows == [("sample", "nucleus", entry["object_counts"][1], entry["median_areas"][1])]


def test_geopandas_reads_one_polygon_per_object(run) -> None:
    out, report = run
    (entry,) = report["images"]
    polygons = geopandas.read_parquet(out / "sample" / "polygons.parquet")
    table = pq.read_table(out / "sample" / "objects.parquet")
    assert len(polygons) == entry["object_counts"][1]
    np.testing.assert_allclose(polygons.geometry.area.to_numpy(), table.column("area").to_numpy())
    geojson = json.loads((out / "sample" / "objects.geojson").read_text())
    assert len(geojson["features"]) == len(polygons)


def test_the_results_table_counts_the_objects(run) -> None:
    out, report = run
    (entry,) = report["images"]
    (row,) = pq.read_table(next((out / "results").glob("*/*.parquet"))).to_pylist()
    assert row["objects_nucleus"] == entry["object_counts"][1]
    assert row["median_area_nucleus"] == entry["median_areas"][1]


def test_instance_truth_is_matched_against_the_objects(run) -> None:
    _, report = run
    (entry,) = report["images"]
    first = entry["objects"][0]
    assert first["threshold"] == 0.5
    assert first["n_pred"] == entry["object_counts"][1]
    assert 0.5 < first["f1"] <= 1.0
