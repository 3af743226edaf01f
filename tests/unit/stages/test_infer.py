"""Infer (segpipe/stages/infer.py): the mask written chunk by chunk equals one prediction of the whole image."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from segpipe.config import TilingConfig
from segpipe.models import load_predictor
from segpipe.stages.infer import Inferred, infer_image
from segpipe.stages.ingest import Ingested, ingest_image
from segpipe.stages.plan import BatchPlan, plan_batch
from segpipe.stages.settings import RunSettings
from segpipe.synthetic import render
from segpipe.tiling import chunk_grid

from ..helpers import whole_image_labels

HEIGHT, WIDTH, CHUNK = 70, 90, 32


def _image() -> np.ndarray:
    image, _ = render(5, 5 + HEIGHT, 9, 9 + WIDTH, seed=3)
    return (image * 4000 + 100).astype(np.uint16)


def _ingested(tmp_path: Path) -> tuple[BatchPlan, Ingested, RunSettings]:
    tifffile.imwrite(tmp_path / "scan.tif", _image())
    settings = replace(RunSettings(out=str(tmp_path / "out")), tiling=TilingConfig(chunk=CHUNK, tile=16))
    plan = plan_batch([str(tmp_path / "scan.tif")], None, settings)
    return plan, ingest_image(plan.jobs[0], plan), settings


@pytest.fixture
def inferred(tmp_path: Path) -> tuple[BatchPlan, Ingested, RunSettings, Inferred]:
    plan, ingested, settings = _ingested(tmp_path)
    return plan, ingested, settings, infer_image(plan.jobs[0], ingested, plan, settings.inference)


def test_the_mask_equals_the_whole_image_prediction(inferred) -> None:
    plan, ingested, _, result = inferred
    mask = zarr.open_array(result.mask, mode="r")
    assert mask.chunks == (CHUNK, CHUNK)
    expected = whole_image_labels(load_predictor(plan.model, "cpu"), _image()[np.newaxis], plan.halo, ingested.stats)
    np.testing.assert_array_equal(mask[:], expected)
    assert 0 < expected.mean() < 1, "both classes should occur, so the comparison means something"


def test_the_result_counts_every_chunk_and_class_pixel(inferred) -> None:
    plan, _, _, result = inferred
    mask = np.asarray(zarr.open_array(result.mask, mode="r")[:])
    assert result.mask == plan.jobs[0].mask
    assert result.chunks == len(chunk_grid(HEIGHT, WIDTH, CHUNK))
    assert result.chunks_computed == result.chunks
    assert result.megapixels_computed == pytest.approx(HEIGHT * WIDTH / 1e6)
    assert result.class_pixels == tuple(np.bincount(mask.ravel(), minlength=plan.model.card.num_classes))


def test_a_rerun_computes_no_chunk_and_keeps_the_mask(inferred) -> None:
    plan, ingested, settings, first = inferred
    before = zarr.open_array(first.mask, mode="r")[:]
    again = infer_image(plan.jobs[0], ingested, plan, settings.inference)
    assert again.chunks_computed == 0
    assert again.megapixels_per_second is None
    np.testing.assert_array_equal(zarr.open_array(again.mask, mode="r")[:], before)
