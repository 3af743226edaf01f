"""A card's preprocessing and output activation through ingest and infer: the mask equals one whole-image pass."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
import zarr

from segpipe.config import TilingConfig
from segpipe.models import load_predictor
from segpipe.normalize import BandStats
from segpipe.preprocessing import preprocess, stats_needed
from segpipe.stages.infer import infer_image
from segpipe.stages.ingest import ingest_image
from segpipe.stages.plan import plan_batch
from segpipe.stages.settings import RunSettings

from ..helpers import TinyNet, save_torchscript, tiny_card, whole_image_labels

HEIGHT, WIDTH, CHUNK = 45, 60, 32
MEASURED = {
    "scale_range": [
        {"id": "scale_range", "kwargs": {"min_percentile": 2, "max_percentile": 98}},
        {"id": "clip", "kwargs": {"min": 0, "max": 1}},
    ],
    "zero_mean_unit_variance": [{"id": "zero_mean_unit_variance"}, {"id": "clip", "kwargs": {"min": -3, "max": 3}}],
}


def _image() -> np.ndarray:
    return np.random.default_rng(11).gamma(2.0, 300.0, (2, HEIGHT, WIDTH)).astype(np.uint16)


def _segment(tmp_path: Path, net: torch.nn.Module, card: dict[str, Any]) -> tuple[np.ndarray, Any]:
    """Ingest and infer the image as the pipeline does; return the mask and the plan."""
    model = save_torchscript(net, tmp_path / "model.pt", card)
    tifffile.imwrite(tmp_path / "scan.tif", _image(), photometric="minisblack", planarconfig="separate")
    settings = replace(RunSettings(model=str(model), out=str(tmp_path / "out")), tiling=TilingConfig(CHUNK, 16))
    plan = plan_batch([str(tmp_path / "scan.tif")], None, settings)
    ingested = ingest_image(plan.jobs[0], plan)
    result = infer_image(plan.jobs[0], ingested, plan, settings.inference)
    return np.asarray(zarr.open_array(result.mask, mode="r")[:]), plan


@pytest.mark.parametrize("measured", list(MEASURED))
def test_steps_that_measure_the_image_give_the_whole_image_labels(tmp_path: Path, measured: str) -> None:
    torch.manual_seed(2)
    mask, plan = _segment(tmp_path, TinyNet(), tiny_card(preprocessing=MEASURED[measured]))
    steps = plan.model.card.input_steps
    image = _image()
    prepared = preprocess(image, steps, BandStats.from_samples(image, stats_needed(steps)))  # every pixel sampled
    expected = whole_image_labels(load_predictor(plan.model, "cpu"), prepared, plan.halo, None)
    np.testing.assert_array_equal(mask, expected)
    assert len(np.unique(expected)) > 1, "more than one class, so the comparison means something"


def test_a_sigmoid_model_labels_class_one_above_its_threshold(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = TinyNet(num_classes=1)
    card = tiny_card(num_classes=2, class_names=["background", "fg"])
    card["postprocessing"] = {"id": "sigmoid", "kwargs": {"threshold": 0.51}}
    card["preprocessing"] = [{"id": "scale_linear", "kwargs": {"gain": 0.001}}]
    mask, plan = _segment(tmp_path, net, card)
    halo = plan.halo
    padded = np.pad(_image() * np.float32(0.001), ((0, 0), (halo, halo + 1), (halo, halo)), mode="symmetric")
    with torch.no_grad():
        logit = net(torch.from_numpy(padded.astype(np.float32))[None])[0, 0].numpy()
    expected = torch.sigmoid(torch.from_numpy(logit[halo : halo + HEIGHT, halo : halo + WIDTH])).numpy() > 0.51
    np.testing.assert_array_equal(mask, expected.astype(np.uint8))
    assert 0 < expected.mean() < 1, "both classes, so the comparison means something"


def test_the_sigmoid_threshold_matters_here(tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = TinyNet(num_classes=1)
    card = tiny_card(num_classes=2, class_names=["background", "fg"], postprocessing="sigmoid")
    card["preprocessing"] = [{"id": "scale_linear", "kwargs": {"gain": 0.001}}]
    at_half, _ = _segment(tmp_path, net, card)
    card["postprocessing"] = {"id": "sigmoid", "kwargs": {"threshold": 0.51}}
    (tmp_path / "again").mkdir()
    above_half, _ = _segment(tmp_path / "again", net, card)
    assert above_half.sum() < at_half.sum()
