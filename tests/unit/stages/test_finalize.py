"""Finalize (segpipe/stages/finalize.py): each pyramid level is the 2 x 2 reduction of the level below, then
the store is committed."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tifffile
import zarr

from segpipe.chunk_inference import create_mask
from segpipe.config import TilingConfig
from segpipe.io.omezarr import level_count
from segpipe.stages.finalize import Finalized, finalize_image
from segpipe.stages.ingest import ingest_image, is_committed
from segpipe.stages.plan import BatchPlan, plan_batch
from segpipe.stages.settings import RunSettings
from segpipe.storage import location

HEIGHT, WIDTH, CHUNK = 517, 263, 128  # three levels, odd sides at every level


def _mean_2x2(level: np.ndarray) -> np.ndarray:
    """Means of 2 x 2 blocks over the last two axes, an odd edge averaged with itself, integers rounded."""
    h, w = level.shape[-2:]
    lead = [(0, 0)] * (level.ndim - 2)
    padded = np.pad(level.astype(np.float64), [*lead, (0, h % 2), (0, w % 2)], "edge")
    means = padded.reshape(*padded.shape[:-2], -1, 2, padded.shape[-1] // 2, 2).mean(axis=(-3, -1))
    return np.rint(means).astype(level.dtype)


@pytest.fixture(scope="module")
def finalized(tmp_path_factory: pytest.TempPathFactory) -> tuple[BatchPlan, Finalized]:
    """A store whose mask holds random labels (so nearest and mode differ), finalized."""
    tmp_path = tmp_path_factory.mktemp("finalize")
    rng = np.random.default_rng(9)
    tifffile.imwrite(tmp_path / "scan.tif", rng.integers(0, 60000, (HEIGHT, WIDTH)).astype(np.uint16))
    settings = replace(RunSettings(out=str(tmp_path / "out")), tiling=TilingConfig(chunk=CHUNK, tile=64))
    plan = plan_batch([str(tmp_path / "scan.tif")], None, settings)
    job = plan.jobs[0]
    ingested = ingest_image(job, plan)
    create_mask(job.mask, HEIGHT, WIDTH, plan.chunk, plan.model.card.num_classes)
    zarr.open_array(job.mask, mode="r+")[:] = rng.integers(0, 2, (HEIGHT, WIDTH))
    return plan, finalize_image(job, plan, ingested.stats)


def _levels(group: str) -> list[np.ndarray]:
    return [
        np.asarray(zarr.open_array(location(group).child(str(n)).url, mode="r")[:])
        for n in range(level_count(HEIGHT, WIDTH))
    ]


def test_image_levels_are_the_2x2_mean_of_the_level_below(finalized) -> None:
    _, result = finalized
    levels = _levels(result.store)
    assert len(levels) == 3
    for n in range(1, len(levels)):
        np.testing.assert_array_equal(levels[n], _mean_2x2(levels[n - 1]), err_msg=f"level {n}")


def test_label_levels_take_the_top_left_pixel_of_each_2x2_block(finalized) -> None:
    _, result = finalized
    levels = _levels(location(result.store).child("labels", "mask").url)
    assert len(levels) == 3
    for n in range(1, len(levels)):  # labels are never averaged into a class in between
        np.testing.assert_array_equal(levels[n], levels[n - 1][::2, ::2], err_msg=f"level {n}")


def test_the_store_is_committed_and_the_next_ingest_reuses_it(finalized) -> None:
    plan, result = finalized
    job = plan.jobs[0]
    assert is_committed(job)
    assert result.store == job.store
    assert result.mask == job.mask
    assert result.probabilities is None
    assert result.tiff is None
    reused = ingest_image(job, plan)
    assert reused.reused
    assert reused.seconds == 0.0
