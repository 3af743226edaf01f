"""Level 1 written by the infer tasks (segpipe/io/first_level.py): the same bytes as finalize building it from
level 0, whichever blocks a task held whole; a level-1 chunk not marked is rebuilt by finalize."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from segpipe.config import TilingConfig
from segpipe.executor import local_executor
from segpipe.io.first_level import FirstLevel, block_chunks, block_major, held_blocks
from segpipe.io.omezarr import build_pyramid, level_count
from segpipe.stages.finalize import finalize_image
from segpipe.stages.infer import first_level_of, infer_image
from segpipe.stages.ingest import ingest_image
from segpipe.stages.plan import BatchPlan, ImageJob, plan_batch
from segpipe.stages.settings import RunSettings
from segpipe.synthetic import render
from segpipe.tiling import chunk_grid

HEIGHT, WIDTH, CHUNK = 330, 270, 64  # 6 x 5 chunks, 3 x 3 blocks (the last row and column of blocks cut short)


class OneSlot:
    """The local executor, reporting one task slot: the infer tasks' runs are then the same on every machine."""

    def __call__(self, tasks: Sequence[Any], label: str = "") -> list[Any]:
        return local_executor(tasks, label)

    def slots(self, label: str) -> int:
        return 1


def _segmented(tmp_path: Path) -> tuple[BatchPlan, ImageJob, Any, FirstLevel]:
    image, _ = render(0, HEIGHT, 0, WIDTH, seed=4)
    tifffile.imwrite(tmp_path / "scan.tif", (image * 4000 + 100).astype(np.uint16))
    settings = replace(RunSettings(out=str(tmp_path / "out")), tiling=TilingConfig(chunk=CHUNK, tile=32))
    plan = plan_batch([str(tmp_path / "scan.tif")], None, settings)
    job = plan.jobs[0]
    ingested = ingest_image(job, plan)
    infer_image(job, ingested, plan, settings.inference, OneSlot())
    level = first_level_of(job, plan)
    assert level is not None
    return plan, job, ingested, level


def _level_files(store: str) -> dict[str, str]:
    """sha256 of every file of levels 1 and up of the image and the mask, by path in the store."""
    root = Path(store)
    found = {}
    for group in (root, root / "labels" / "mask"):
        for level in sorted(p for p in group.iterdir() if p.name.isdigit() and p.name != "0"):
            for path in sorted(level.rglob("*")):
                if path.is_file():
                    found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _built_from_level0(store: str, tmp_path: Path) -> dict[str, str]:
    """The level files of a copy of ``store`` whose pyramids are built whole from level 0."""
    copy = tmp_path / "copy.ome.zarr"
    shutil.copytree(store, copy)
    levels = level_count(HEIGHT, WIDTH)
    build_pyramid(str(copy), levels, CHUNK, False)
    build_pyramid(str(copy / "labels" / "mask"), levels, CHUNK, True)
    return _level_files(str(copy))


def test_blocks_held_whole_are_written_by_infer_and_not_the_others(tmp_path: Path) -> None:
    *_, level = _segmented(tmp_path)
    written = level.written()
    assert written is not None
    assert 0 < len(written) < 9  # the shrinking runs split some blocks between two tasks


def test_the_levels_are_the_bytes_finalize_builds_from_level_0(tmp_path: Path) -> None:
    plan, job, ingested, _ = _segmented(tmp_path)
    finalize_image(job, plan, ingested.stats)
    assert _level_files(job.store) == _built_from_level0(job.store, tmp_path)


def test_a_level_1_chunk_not_marked_is_rebuilt_by_finalize(tmp_path: Path) -> None:
    """As after a kill between a block's last level-0 chunk and its level-1 write."""
    plan, job, ingested, level = _segmented(tmp_path)
    y0, x0 = sorted(level.written() or ())[0]
    zarr.open_array(level.image, mode="r+")[:, y0 : y0 + CHUNK, x0 : x0 + CHUNK] = 7
    zarr.open_array(level.mask, mode="r+")[y0 : y0 + CHUNK, x0 : x0 + CHUNK] = 1
    (Path(level.ledger.root.url.removeprefix("file://")) / f"{y0}_{x0}").unlink()
    finalize_image(job, plan, ingested.stats)
    assert _level_files(job.store) == _built_from_level0(job.store, tmp_path)


def test_a_resumed_infer_recreates_level_1_when_it_is_missing(tmp_path: Path) -> None:
    """A store left by a run whose infer tasks did not write level 1: it is created and filled again."""
    plan, job, ingested, level = _segmented(tmp_path)
    shutil.rmtree(level.image.removeprefix("file://"))
    infer_image(job, ingested, plan, RunSettings(out="").inference, OneSlot())  # every chunk done: none computed
    assert level.exists()
    assert level.written() == frozenset()  # so finalize builds all of it
    finalize_image(job, plan, ingested.stats)
    assert _level_files(job.store) == _built_from_level0(job.store, tmp_path)


def test_no_first_level_for_an_odd_chunk_or_a_one_level_pyramid() -> None:
    assert FirstLevel.of_store("/tmp/x.ome.zarr", (600, 600), 65, "key") is None
    assert FirstLevel.of_store("/tmp/x.ome.zarr", (256, 200), 64, "key") is None
    assert FirstLevel.of_store("/tmp/x.ome.zarr", (257, 200), 64, "key") is not None


def test_chunks_are_taken_block_by_block() -> None:
    regions = chunk_grid(3 * CHUNK, 3 * CHUNK, CHUNK)
    origins = [(r.y0 // CHUNK, r.x0 // CHUNK) for r in block_major(regions, CHUNK)]
    assert origins == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (1, 2), (2, 0), (2, 1), (2, 2)]


def test_a_block_at_the_border_has_the_chunks_inside_the_image() -> None:
    assert block_chunks((1, 1), CHUNK, 3 * CHUNK, 3 * CHUNK + 1) == {(2 * CHUNK, 2 * CHUNK), (2 * CHUNK, 3 * CHUNK)}


def test_only_blocks_whose_every_chunk_is_in_the_run_are_held() -> None:
    chunk, edge = 128, 512  # 4 x 4 chunks, 2 x 2 blocks
    level = FirstLevel.of_store("/tmp/x.ome.zarr", (edge, edge), chunk, "key")
    assert level is not None
    run = block_major(chunk_grid(edge, edge, chunk), chunk)[:6]  # block (0, 0) and half of (0, 1)
    held = held_blocks(level, run, edge, edge)
    assert held == {(0, 0): frozenset((r.y0, r.x0) for r in run[:4])}
