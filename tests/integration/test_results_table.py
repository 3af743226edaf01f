"""What analytics teams read the next morning: the Parquet results table of two runs, loaded with pandas, and
the canary check that flags a model whose quality moved."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from flows.segment_batch import segment_batch
from segpipe.synthetic import write_sample
from tests.unit.helpers import save_torchscript

pytestmark = pytest.mark.integration

COLUMNS = {
    "run_date",
    "run_id",
    "run_started_at",
    "model_name",
    "model_version",
    "model_sha256",
    "image_name",
    "image_url",
    "image_version",
    "role",
    "skipped",
    "pixels_nucleus",
    "fraction_nucleus",
    "area_nucleus",
    "area_unit",
    "mean_confidence",
    "iou_nucleus",
    "dice_nucleus",
    "mean_dice",
}


class AllBackground(torch.nn.Module):
    """A model that finds nothing: what a broken model release looks like to the canary."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        background = torch.ones_like(x[:, :1])
        return torch.cat([background, torch.zeros_like(background)], dim=1)


def test_two_runs_append_to_one_table_and_the_canary_flags_a_worse_model(tmp_path: Path, dask_cluster: str) -> None:
    night = [write_sample(tmp_path / "in", 192, seed=s, name=f"scene{s}")[0] for s in (1, 2)]
    canary_image, canary_truth = write_sample(tmp_path / "canary", 192, seed=9, name="canary")
    canary = {"images": [str(canary_image)], "truths": [str(canary_truth)], "tolerance": 0.05}
    out = tmp_path / "out"
    settings = {"out": str(out), "tiling": {"chunk": 96, "tile": 96}}
    broken = save_torchscript(
        AllBackground(),
        tmp_path / "broken.pt",
        {"name": "broken", "in_channels": 1, "num_classes": 2, "class_names": ["background", "nucleus"]},
    )
    first = segment_batch([str(p) for p in night], None, settings, cluster=dask_cluster, canary=canary).to_json()
    second = segment_batch(
        [str(p) for p in night],
        None,
        {**settings, "model": str(broken), "overwrite": True},
        cluster=dask_cluster,
        canary=canary,
    ).to_json()

    table = pd.read_parquet(out / "results")  # Hive partitions: run_date=YYYY-MM-DD
    assert COLUMNS <= set(table.columns)
    assert len(table) == 6
    assert set(table["role"]) == {"input", "canary"}
    assert table["run_id"].nunique() == 2
    assert table["run_date"].nunique() == 1
    inputs = table[table["role"] == "input"]
    assert inputs["dice_nucleus"].isna().all()  # nightly data has no truth: no scores, but counts and areas
    mask = np.asarray(tifffile.imread(night[0]))  # same height and width as the mask
    assert (inputs["pixels_background"] + inputs["pixels_nucleus"]).eq(mask.size).all()
    scene1 = inputs[inputs["image_name"] == "scene1"]
    assert scene1["image_size"].eq(Path(night[0]).stat().st_size).all()  # what the store reported when planned
    assert scene1["image_version"].str.startswith("mtime_ns:").all()
    assert inputs["area_unit"].eq("pixel").all(), set(inputs["area_unit"])
    assert inputs["mean_confidence"].between(0.5, 1).all(), list(inputs["mean_confidence"])
    canary_rows = table[table["role"] == "canary"].sort_values("run_started_at")
    assert canary_rows["dice_nucleus"].iloc[0] > 0.9
    assert not first["batch"]["canary"]["alert"]  # nothing to compare with on the first night
    assert second["batch"]["canary"]["alert"]  # a much worse model: the canary Dice fell beyond 0.05
    moved = {c["metric"] for c in second["batch"]["canary"]["checks"] if c["alert"]}
    assert "mean_dice" in moved
    assert first["batch"]["images"] == 2, "the canary is not part of the batch"
    assert "iou" not in first["batch"], "the canary is not part of the batch"
