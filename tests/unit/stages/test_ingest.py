"""Ingest (segpipe/stages/ingest.py): level 0 of the store is the input, copied chunk by chunk, with its band stats."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from segpipe import normalize
from segpipe.config import TilingConfig
from segpipe.io.ledger import ChunkLedger
from segpipe.normalize import BandStats
from segpipe.stages.ingest import ingest_image, level0
from segpipe.stages.plan import BatchPlan, plan_batch
from segpipe.stages.settings import RunSettings
from segpipe.storage import location
from segpipe.tiling import Region, chunk_grid, strided_sample

HEIGHT, WIDTH, CHUNK = 90, 70, 32


def _plan(tmp_path: Path, image: np.ndarray) -> BatchPlan:
    tifffile.imwrite(tmp_path / "scan.tif", image)
    settings = replace(RunSettings(out=str(tmp_path / "out")), tiling=TilingConfig(chunk=CHUNK, tile=16))
    return plan_batch([str(tmp_path / "scan.tif")], None, settings)


@pytest.fixture
def image() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 60000, (HEIGHT, WIDTH)).astype(np.uint16)


def test_level0_is_the_input_on_the_chunk_grid(tmp_path: Path, image: np.ndarray) -> None:
    plan = _plan(tmp_path, image)
    job = plan.jobs[0]
    ingested = ingest_image(job, plan)
    copy = zarr.open_array(level0(job), mode="r")
    assert copy.chunks == (1, CHUNK, CHUNK)
    np.testing.assert_array_equal(copy[:], image[np.newaxis])
    np.testing.assert_array_equal(ingested.source.read(0, HEIGHT, 0, WIDTH), image[np.newaxis])
    assert not ingested.reused


def test_every_chunk_is_marked_done_in_the_ledger(tmp_path: Path, image: np.ndarray) -> None:
    plan = _plan(tmp_path, image)
    job = plan.jobs[0]
    ingest_image(job, plan)
    ledger = ChunkLedger(location(job.store), "ingest", job.ingest_key)
    expected = {(r.y0, r.x0) for r in chunk_grid(HEIGHT, WIDTH, CHUNK)}
    assert ledger.done_regions() == expected


def test_band_stats_equal_the_whole_images(tmp_path: Path, image: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(normalize, "MAX_SAMPLES", 500)  # a stride of 4: the sample crosses chunk borders
    stride = normalize.sample_stride(HEIGHT, WIDTH)
    assert stride > 1, "the sample should be strided"
    plan = _plan(tmp_path, image)
    ingested = ingest_image(plan.jobs[0], plan)
    whole = strided_sample(image[np.newaxis], Region(0, HEIGHT, 0, WIDTH), stride).reshape(1, -1)
    assert ingested.stats == BandStats.from_samples(whole)
    assert BandStats.from_dict(ingested.stats_dict()) == ingested.stats
