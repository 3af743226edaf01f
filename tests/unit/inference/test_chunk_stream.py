"""Inside one infer task: chunks read ahead, batches across chunk borders, writes behind (segpipe/chunk_inference.py).

The overlap tests need no clock: the model's forward pass waits for a signal that only the reader (or writer)
thread can give while that pass runs; run in sequence, the pass would wait out its 30 s and see no signal.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import segpipe.chunk_inference as inference
from segpipe.chunk_inference import (
    MAX_CHUNKS_PER_TASK,
    ChunkJob,
    ChunkOutputs,
    Windowing,
    create_mask,
    segment_image,
    task_runs,
)
from segpipe.config import InferenceConfig
from segpipe.executor import local_executor, task_slots
from segpipe.io.images import ImageSource
from segpipe.io.ledger import ChunkLedger
from segpipe.models import ModelRef, Predictor, load_predictor
from segpipe.tiling import Region, chunk_grid

from ..helpers import whole_image_labels, write_zarr

GATE_SECONDS = 30.0


class Recording:
    """A real predictor that records each pass's batch shape. Pass ``hold_pass`` (1-based) waits for ``gate``
    (``saw_gate``: whether it opened while the pass waited); pass ``announce_pass`` sets ``announce``."""

    def __init__(
        self,
        inner: Predictor,
        gate: threading.Event | None = None,
        hold_pass: int = 0,
        announce: threading.Event | None = None,
        announce_pass: int = 0,
    ) -> None:
        self.inner, self.card = inner, inner.card
        self.gate, self.hold_pass, self.announce, self.announce_pass = gate, hold_pass, announce, announce_pass
        self.shapes: list[tuple[int, ...]] = []
        self.saw_gate: bool | None = None

    def at_precision(self, precision: str) -> Recording:
        return self

    @property
    def compile_seconds(self) -> dict[tuple[tuple[int, ...], str], float]:
        return self.inner.compile_seconds

    def compiled_here(self, before: set[tuple[tuple[int, ...], str]]) -> float:
        return self.inner.compiled_here(before)

    def batch_size_for(self, channels: int, edge: int, limit: int) -> int:
        return self.inner.batch_size_for(channels, edge, limit)

    def launch(self, batch: np.ndarray) -> Any:
        self.shapes.append(batch.shape)
        if len(self.shapes) == self.announce_pass and self.announce is not None:
            self.announce.set()
        if len(self.shapes) == self.hold_pass and self.gate is not None:
            self.saw_gate = self.gate.wait(GATE_SECONDS)
        return self.inner.launch(batch)


def _job(tmp_path: Path, ref: ModelRef, image: np.ndarray, chunk: int, tile: int, batch_size: int | str):
    source = write_zarr(tmp_path / "input.zarr", image, chunks=(image.shape[0], 7, 9))
    mask = str(tmp_path / "mask.zarr")
    create_mask(mask, source.height, source.width, chunk, ref.card.num_classes)
    ledger = ChunkLedger(str(tmp_path), "infer", "k")
    inference_config = InferenceConfig(batch_size=batch_size, device="cpu")
    halo = ref.card.halo
    return ChunkJob(source, ref, Windowing(chunk, tile, halo), inference_config, ChunkOutputs(mask, None, ledger)), halo


def _use(monkeypatch: pytest.MonkeyPatch, predictor: Recording) -> None:
    monkeypatch.setattr(inference, "load_predictor", lambda *args, **kwargs: predictor)


def _before_reading(monkeypatch: pytest.MonkeyPatch, hook: Any) -> None:
    """Call ``hook(region)`` before each chunk's window is read."""
    read_window = inference.read_window

    def reading(source: Any, region: Region, *args: Any) -> np.ndarray:
        hook(region)
        return read_window(source, region, *args)

    monkeypatch.setattr(inference, "read_window", reading)


def _image(height: int, width: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (2, height, width)).astype(np.float32)


@pytest.mark.parametrize("per_task", [1, 2, 3, 100])
def test_tasks_of_many_chunks_write_the_whole_image_labels(tmp_path: Path, tiny_ref: ModelRef, per_task: int) -> None:
    image = _image(50, 70)
    job, halo = _job(tmp_path, tiny_ref, image, chunk=16, tile=8, batch_size=3)
    summary = segment_image(job, per_task=per_task)
    regions = chunk_grid(50, 70, 16)
    assert (summary.chunks, summary.chunks_computed, summary.pixels) == (len(regions), len(regions), 50 * 70)
    assert job.outputs.ledger is not None
    assert job.outputs.ledger.done_count() == len(regions)
    expected = whole_image_labels(load_predictor(tiny_ref, "cpu"), image, halo, None)
    np.testing.assert_array_equal(zarr.open_array(job.outputs.mask, mode="r")[:], expected)
    assert summary.class_pixels == tuple(np.bincount(expected.ravel(), minlength=3))


def test_batches_run_across_chunk_borders_one_edge_at_a_time(
    tmp_path: Path, tiny_ref: ModelRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk as small as a tile holds one window: a GPU would see batches of one, chunk after chunk. In one
    task, windows of consecutive chunks fill the batch; the small corner chunk's windows (a smaller edge) go
    in a batch of their own."""
    image = _image(20, 52)  # chunks of 16: 4 full-height ones (the last 4 wide), then 4 that are 4 high
    job, halo = _job(tmp_path, tiny_ref, image, chunk=16, tile=16, batch_size=3)
    recording = Recording(load_predictor(tiny_ref, "cpu"))
    _use(monkeypatch, recording)
    segment_image(job, per_task=100)
    big, small = 16 + 2 * halo, 4 + 2 * halo  # the 16 x 4 and 4 x 16 chunks keep the tile's edge
    assert [(shape[0], shape[2]) for shape in recording.shapes] == [(3, big), (3, big), (1, big), (1, small)]
    expected = whole_image_labels(load_predictor(tiny_ref, "cpu"), image, halo, None)
    np.testing.assert_array_equal(zarr.open_array(job.outputs.mask, mode="r")[:], expected)


def test_the_next_chunk_is_read_while_the_model_runs_on_this_one(
    tmp_path: Path, tiny_ref: ModelRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = _image(16, 48)  # three chunks of one window each
    job, _ = _job(tmp_path, tiny_ref, image, chunk=16, tile=16, batch_size=1)
    second_chunk_read = threading.Event()
    _before_reading(monkeypatch, lambda region: second_chunk_read.set() if region.x0 == 16 else None)
    recording = Recording(load_predictor(tiny_ref, "cpu"), second_chunk_read, hold_pass=1)
    _use(monkeypatch, recording)
    segment_image(job, per_task=3)
    assert recording.saw_gate, "chunk 2 was not read while the model ran on chunk 1"


def test_a_finished_chunk_is_written_while_the_model_runs_on_the_next(
    tmp_path: Path, tiny_ref: ModelRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunk 1's write waits until pass 3 has started: written in the model's thread, it would wait out its 30 s."""
    image = _image(16, 64)  # four chunks of one window each
    job, _ = _job(tmp_path, tiny_ref, image, chunk=16, tile=16, batch_size=1)
    third_pass_started = threading.Event()
    write_waited: list[bool] = []
    mark_done = ChunkLedger.mark_done

    def marking(self: ChunkLedger, region: Region) -> None:
        if region.x0 == 0:
            write_waited.append(third_pass_started.wait(GATE_SECONDS))
        mark_done(self, region)

    monkeypatch.setattr(ChunkLedger, "mark_done", marking)
    # Pass 2 is launched before pass 1 is collected (one pass in flight): chunk 1 is finished after pass 2.
    _use(monkeypatch, Recording(load_predictor(tiny_ref, "cpu"), announce=third_pass_started, announce_pass=3))
    segment_image(job, per_task=4)
    assert write_waited == [True], "chunk 1 was not written while the model ran on chunk 3"


def test_a_failed_read_fails_the_task_and_marks_only_chunks_written_before_it(
    tmp_path: Path, tiny_ref: ModelRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = _image(16, 64)
    job, _ = _job(tmp_path, tiny_ref, image, chunk=16, tile=16, batch_size=1)

    def fail_on_third(region: Region) -> None:
        if region.x0 == 32:
            raise OSError("tile 3 is corrupt")

    _before_reading(monkeypatch, fail_on_third)
    with pytest.raises(OSError, match="tile 3 is corrupt"):
        segment_image(job, per_task=4)
    assert job.outputs.ledger is not None
    done = job.outputs.ledger.done_regions()
    assert (0, 32) not in done
    assert (0, 48) not in done
    assert done <= {(0, 0), (0, 16)}
    written = zarr.open_array(job.outputs.mask, mode="r")
    expected = whole_image_labels(load_predictor(tiny_ref, "cpu"), image, job.windowing.halo, None)
    for _, x0 in done:  # a chunk marked done holds its labels
        np.testing.assert_array_equal(written[:, x0 : x0 + 16], expected[:, x0 : x0 + 16])


@pytest.mark.parametrize(("chunks", "slots"), [(64, 2), (4, 2), (1000, 8), (1, 1), (0, 2), (5, 0)])
def test_task_runs_cover_every_chunk_once_in_order_and_shrink_to_single_chunks(chunks: int, slots: int) -> None:
    regions = [Region(0, 1, x, x + 1) for x in range(chunks)]
    runs = task_runs(regions, slots)
    sizes = [len(run) for run in runs]
    assert [r for run in runs for r in run] == regions
    assert sizes == sorted(sizes, reverse=True)
    assert max(sizes, default=1) <= MAX_CHUNKS_PER_TASK
    assert sizes[-max(slots, 1) :] == [1] * min(chunks, max(slots, 1))  # the last task on each slot: one chunk


def test_task_runs_batch_many_chunks_first() -> None:
    assert [len(run) for run in task_runs(list(range(64)), 2)] == [16, 12, 9, 7, 5, 4, 3, 2, 2, 1, 1, 1, 1]


def test_task_slots_asks_the_executor_or_counts_this_machines_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    class TwoGpus:
        def __call__(self, tasks: Any, label: str = "") -> list[Any]:
            return []

        def slots(self, label: str = "") -> int:
            return 2 if label == "infer" else 32

    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert (task_slots(TwoGpus(), "infer"), task_slots(TwoGpus(), "ingest")) == (2, 32)
    assert task_slots(local_executor, "infer") == 6
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert task_slots(local_executor) == 1


def test_a_task_opens_its_input_and_its_mask_once(
    tmp_path: Path, tiny_ref: ModelRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On an object store every open is 2-6 requests: a task of 4 chunks opens each array once, not per chunk."""
    job, _ = _job(tmp_path, tiny_ref, _image(16, 64), chunk=16, tile=16, batch_size=1)
    opened: list[str] = []
    open_array, stored_array = inference.open_array, ImageSource.stored_array

    def counting_open(url: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append("mask")
        return open_array(url, *args, **kwargs)

    def counting_stored(self: ImageSource) -> Any:
        opened.append("input")
        return stored_array(self)

    monkeypatch.setattr(inference, "open_array", counting_open)
    monkeypatch.setattr(ImageSource, "stored_array", counting_stored)
    segment_image(job, per_task=4)
    assert sorted(opened) == ["input", "mask"]
