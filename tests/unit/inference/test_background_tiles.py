"""Tiles with no foreground within a halo are written as background, never computed (segpipe/chunk_inference.py).

A half-glass image: the tiles the foreground reaches are computed exactly as in a whole run; the others (inside a
computed chunk, or every tile of a chunk) are label 0, counted neither as computed pixels nor as predictions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from segpipe.chunk_inference import ChunkJob, ChunkOutputs, Windowing, create_mask, segment_image
from segpipe.config import InferenceConfig
from segpipe.io.foreground import ForegroundIndex, background_tiles
from segpipe.io.ledger import ChunkLedger
from segpipe.models import ModelRef, load_predictor
from segpipe.tiling import Region, chunk_grid
from segpipe.windows import TrimWindows

from ..helpers import whole_image_labels, write_zarr

HEIGHT, WIDTH, CHUNK, TILE = 48, 80, 16, 8
FOREGROUND_COLUMNS = 30  # the left columns hold tissue; the rest is glass


def _skipped_pixels(background: dict[Region, frozenset[Region]]) -> np.ndarray:
    skipped = np.zeros((HEIGHT, WIDTH), bool)
    for chunk, tiles in background.items():
        for t in tiles:
            skipped[chunk.y0 + t.y0 : chunk.y0 + t.y1, chunk.x0 + t.x0 : chunk.x0 + t.x1] = True
    return skipped


@pytest.mark.parametrize("per_task", [1, 3, 100])
def test_glass_tiles_are_background_and_the_rest_is_the_whole_run(
    tmp_path: Path, tiny_ref: ModelRef, per_task: int
) -> None:
    image = np.random.default_rng(3).normal(0, 1, (2, HEIGHT, WIDTH)).astype(np.float32)
    source = write_zarr(tmp_path / "input.zarr", image, chunks=(2, 7, 9))
    foreground = np.zeros((HEIGHT, WIDTH), bool)
    foreground[:, :FOREGROUND_COLUMNS] = True
    halo = tiny_ref.card.halo
    regions = chunk_grid(HEIGHT, WIDTH, CHUNK)
    background = background_tiles(ForegroundIndex(foreground, (1.0, 1.0), (1.0, 1.0)), regions, TILE, halo)
    mask = str(tmp_path / "mask.zarr")
    create_mask(mask, HEIGHT, WIDTH, CHUNK, tiny_ref.card.num_classes)
    ledger = ChunkLedger(str(tmp_path), "infer", "k")
    outputs = ChunkOutputs(mask, None, ledger)
    windowing, inference = Windowing(CHUNK, TILE, halo), InferenceConfig(device="cpu")
    job = ChunkJob(source, tiny_ref, windowing, inference, outputs, None, background)
    summary = segment_image(job, per_task=per_task)

    skipped = _skipped_pixels(background)
    whole = whole_image_labels(load_predictor(tiny_ref, "cpu"), image, halo, None)
    written = np.asarray(zarr.open_array(mask, mode="r")[:])
    first = -(-(FOREGROUND_COLUMNS + halo) // TILE) * TILE  # the first tile whose halo misses the foreground
    assert skipped[:, first:].all()
    assert not skipped[:, :first].any()
    assert any(len(tiles) < 4 for tiles in background.values())  # a chunk half computed, half skipped
    assert (written[skipped] == 0).all()
    np.testing.assert_array_equal(written[~skipped], whole[~skipped])
    assert whole[skipped].any()  # the model would not have written background there: the tiles were not computed
    assert summary.chunks_computed == len(regions) == ledger.done_count()
    assert summary.pixels == int((~skipped).sum())
    assert summary.class_pixels == tuple(np.bincount(whole[~skipped], minlength=3))


def test_tiles_are_skipped_only_when_streaming() -> None:
    window = np.zeros((1, 32, 32), np.float32)
    with pytest.raises(ValueError, match="streaming"):
        TrimWindows(window, Region(0, 16, 0, 16), 8, 8, 2, 2, skip={Region(0, 8, 0, 8)})
