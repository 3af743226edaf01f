"""The GPU runner's ``--cpu`` mode, run as CI runs it: a subprocess writing its JSON, every field present and sane.

``--gpu-machine-imports`` refuses any third-party import the GPU machine and the fetched wheels could not satisfy,
so a new dependency of the code path it measures fails here, not on the GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
STAGE_FIELDS = {
    "size", "precision", "chunk", "tile", "window", "windows", "ingest_seconds", "infer_seconds", "task_seconds",
    "megapixels", "megapixels_per_second", "mask", "raw_megapixels_per_second_at_tile", "ratio_to_raw_forward",
    "halo_ceiling", "forward_seconds_estimate", "forward_share_of_infer", "forward_share_of_ingest_and_infer",
    "forward_share_capped",
}  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The JSON of one ``bench/gpu/run.py --cpu`` run."""
    out = tmp_path_factory.mktemp("gpu-runner") / "gpu.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "DASK_CONFIG": str(REPO / "infra" / "dask")}
    command = [sys.executable, "bench/gpu/run.py", "--cpu", "--gpu-machine-imports", "--json", str(out)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def test_it_ran_the_cpu_mode_on_a_local_cluster(report: dict[str, Any]) -> None:
    assert report["mode"] == "cpu"
    assert report["cluster"]["kind"] == "local"
    assert report["skipped"] == []


def test_the_raw_forward_covers_every_tile_and_precision(report: dict[str, Any]) -> None:
    measured = {(f["edge"], f["precision"]) for f in report["raw_forward"]}
    wanted = {(edge, p) for edge in report["profile"]["tiles"] for p in report["profile"]["precisions"]}
    assert wanted <= measured


def test_every_raw_rate_is_positive(report: dict[str, Any]) -> None:
    assert all(f["megapixels_per_second"] > 0 for f in report["raw_forward"])


def test_each_stage_image_ran_in_each_precision(report: dict[str, Any]) -> None:
    runs = {(run["size"], run["precision"]) for run in report["stage"]}
    sizes, precisions = report["profile"]["sizes"], report["profile"]["precisions"]
    assert runs == {(size, p) for size in sizes for p in precisions}


def test_every_stage_run_has_every_field(report: dict[str, Any]) -> None:
    assert all(set(run) == STAGE_FIELDS for run in report["stage"])


def test_every_stage_rate_is_positive(report: dict[str, Any]) -> None:
    assert all(run["megapixels_per_second"] > 0 for run in report["stage"])


def test_every_ratio_to_the_raw_forward_is_positive(report: dict[str, Any]) -> None:
    assert all(run["ratio_to_raw_forward"] > 0 for run in report["stage"])


def test_every_forward_share_lies_in_0_1(report: dict[str, Any]) -> None:
    shares = [run["forward_share_of_infer"] for run in report["stage"]]
    shares += [run["forward_share_of_ingest_and_infer"] for run in report["stage"] if run["ingest_seconds"]]
    assert all(0 < share <= 1 for share in shares), shares


def test_every_mask_agreement_lies_in_0_1(report: dict[str, Any]) -> None:
    agreement = report["mask_agreement"]
    values = [*agreement["raw_windows"].values(), *agreement["stage"].values()]
    assert values
    assert all(0 <= value <= 1 for value in values)


def test_the_summary_names_the_largest_image(report: dict[str, Any]) -> None:
    assert report["summary"]["size"] == max(report["profile"]["sizes"])


def test_the_summary_agreement_lies_in_0_1(report: dict[str, Any]) -> None:
    assert 0 <= report["summary"]["mask_agreement_bf16_vs_fp32"] <= 1


def test_the_summary_has_the_goal_at_the_stage_tile(report: dict[str, Any]) -> None:
    goal = report["summary"]["goal"]
    assert goal["value"] == report["summary"]["ratio_to_raw_forward"]["fp32"]


def test_no_gpu_memory_is_reported_on_a_cpu(report: dict[str, Any]) -> None:
    assert report["gpu_memory_peak_bytes"] == {"raw_forward": None, "stage_workers": None}


def test_nothing_imported_is_missing_on_the_gpu_machine(report: dict[str, Any]) -> None:
    assert report["imports"]["not_on_gpu_machine"] == []


def test_the_wall_time_fits_ci(report: dict[str, Any]) -> None:
    assert 0 < report["wall_seconds"] < 240
