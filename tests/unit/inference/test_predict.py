"""Tiled inference equals whole-image inference (segpipe/chunk_inference.py), the pipeline's key property.

Each case writes the image as a Zarr array, resolves chunk/tile/halo the way the pipeline does, predicts every
chunk into a Zarr mask with the local executor, and compares with one forward pass over the whole image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from segpipe.chunk_inference import ChunkJob, ChunkOutputs, Windowing, create_mask, label_dtype, segment_image
from segpipe.config import InferenceConfig, TilingConfig
from segpipe.io.copy import measure
from segpipe.io.ledger import ChunkLedger
from segpipe.models import ModelRef, load_predictor
from segpipe.stages.plan import resolve_tiling
from segpipe.synthetic import render
from segpipe.tiling import chunk_grid

from ..helpers import trim_windows, whole_image_labels, write_zarr


def _builtin_image(height: int, width: int) -> np.ndarray:
    image, _ = render(5, 5 + height, 9, 9 + width, seed=3)
    return (image * 4000 + 100).astype(np.uint16)[np.newaxis]


def _tiny_image(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(height * 1000 + width).normal(0, 1, (2, height, width)).astype(np.float32)


def _segment(tmp_path: Path, ref: ModelRef, image: np.ndarray, tiling: TilingConfig, batch_size: int):
    """Run segment_image as the pipeline would; return (mask, whole-image labels, summary, chunk)."""
    source = write_zarr(tmp_path / "input.zarr", image, chunks=(image.shape[0], 17, 23))
    chunk, tile, halo = resolve_tiling(tiling, ref)
    stats = measure(source, chunk) if ref.card.normalization == "percentile" else None
    mask_path = str(tmp_path / "mask.zarr")
    create_mask(mask_path, source.height, source.width, chunk, ref.card.num_classes)
    inference = InferenceConfig(batch_size=batch_size, device="cpu")
    job = ChunkJob(source, ref, Windowing(chunk, tile, halo), inference, ChunkOutputs(mask_path), stats)
    summary = segment_image(job)
    mask = zarr.open_array(mask_path, mode="r")
    assert mask.chunks == (min(chunk, source.height), min(chunk, source.width))
    expected = whole_image_labels(load_predictor(ref, "cpu"), image, halo, stats)
    return mask[:], expected, summary, chunk


CASES = [
    # (height, width, chunk, tile, halo override, batch size)
    (100, 77, 32, 16, None, 1),
    (100, 77, 48, 32, None, 3),
    (100, 77, 64, 16, None, 3),
    (1, 1, 64, 16, None, 1),
    (1, 1, 32, 32, None, 3),
    (37, 300, 64, 32, None, 3),
    (37, 300, 48, 16, None, 1),
    (5, 130, 32, 100, None, 3),  # tile larger than the chunk
]


@pytest.mark.parametrize(("height", "width", "chunk", "tile", "halo", "batch"), CASES)
def test_builtin_tiled_equals_whole_image(tmp_path, builtin_ref, height, width, chunk, tile, halo, batch) -> None:
    image = _builtin_image(height, width)
    mask, expected, summary, _ = _segment(tmp_path, builtin_ref, image, TilingConfig(chunk, tile, halo), batch)
    assert mask.dtype == label_dtype(2)
    np.testing.assert_array_equal(mask, expected)
    assert summary.pixels == height * width
    assert summary.chunks == -(-height // chunk) * -(-width // chunk)
    if height * width > 1000:
        assert 0 < mask.mean() < 1  # both classes occur, so the comparison means something


def test_builtin_with_smaller_halo_still_covering_the_radius(tmp_path, builtin_ref) -> None:
    image = _builtin_image(70, 90)
    mask, expected, _, _ = _segment(tmp_path, builtin_ref, image, TilingConfig(32, 16, 26), 2)  # 26 -> 28
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize(("height", "width", "chunk", "tile", "halo", "batch"), [*CASES, (64, 64, 16, 8, 12, 5)])
def test_random_torchscript_tiled_equals_whole_image(tmp_path, tiny_ref, height, width, chunk, tile, halo, batch):
    image = _tiny_image(height, width)
    mask, expected, summary, _ = _segment(tmp_path, tiny_ref, image, TilingConfig(chunk, tile, halo), batch)
    np.testing.assert_array_equal(mask, expected)
    assert summary.pixels == height * width
    if height * width > 1000:
        assert len(np.unique(mask)) >= 2


@pytest.mark.parametrize("model", ["builtin", "tiny"])
def test_chunk_not_a_multiple_of_the_size_divisor_equals_whole_image(tmp_path, builtin_ref, tiny_ref, model):
    ref, image = (builtin_ref, _builtin_image(100, 77)) if model == "builtin" else (tiny_ref, _tiny_image(100, 77))
    chunk_setting = 50 if model == "builtin" else 33  # 50 % 4 != 0, 33 % 2 != 0
    mask, expected, _, chunk = _segment(tmp_path, ref, image, TilingConfig(chunk_setting, 16, None), 2)
    np.testing.assert_array_equal(mask, expected)


def test_predict_window_trims_the_halo_and_ignores_batch_size(tiny_ref) -> None:
    predictor = load_predictor(tiny_ref, "cpu")
    halo = 8
    window = np.random.default_rng(5).normal(size=(2, 30 + 2 * halo, 21 + 2 * halo)).astype(np.float32)
    labels = [trim_windows(predictor, window, halo, 10, b).argmax(axis=0) for b in (1, 2, 7, 100)]
    assert labels[0].shape == (30, 21)
    for other in labels[1:]:
        np.testing.assert_array_equal(other, labels[0])
    # The centre of one forward pass over the whole window gives the same labels.
    padded = np.pad(window, ((0, 0), (0, 0), (0, 1)), mode="symmetric")  # width to a multiple of 2
    whole = predictor(padded[np.newaxis])[0][:, halo : halo + 30, halo : halo + 21].argmax(0)
    np.testing.assert_array_equal(labels[0], whole)


def test_label_dtype() -> None:
    assert label_dtype(2) == np.uint8
    assert label_dtype(256) == np.uint8
    assert label_dtype(257) == np.uint16


def test_segment_image_skips_chunks_the_ledger_marks_done(tmp_path, tiny_ref) -> None:
    image = _tiny_image(40, 50)
    source = write_zarr(tmp_path / "input.zarr", image)
    chunk, tile, halo = resolve_tiling(TilingConfig(16, 16, None), tiny_ref)
    mask_path = str(tmp_path / "mask.zarr")
    create_mask(mask_path, 40, 50, chunk, 3)
    ledger = ChunkLedger(str(tmp_path), "infer", "k")
    ledger.reset()
    regions = chunk_grid(40, 50, chunk)
    skipped = regions[::3]
    for r in skipped:
        ledger.mark_done(r)
    inference = InferenceConfig(batch_size=2, device="cpu")
    job = ChunkJob(source, tiny_ref, Windowing(chunk, tile, halo), inference, ChunkOutputs(mask_path, None, ledger))
    summary = segment_image(job)
    assert summary.chunks == len(regions)
    assert summary.chunks_computed == len(regions) - len(skipped)
    assert summary.pixels == 40 * 50 - sum(r.height * r.width for r in skipped)
    assert all(ledger.is_done(r) for r in regions)
    mask = zarr.open_array(mask_path, mode="r")[:]
    expected = whole_image_labels(load_predictor(tiny_ref, "cpu"), image, halo, None)
    for r in regions:
        got, want = mask[r.y0 : r.y1, r.x0 : r.x1], expected[r.y0 : r.y1, r.x0 : r.x1]
        if r in skipped:
            assert (got == 0).all()  # never written: still the fill value
        else:
            np.testing.assert_array_equal(got, want)
    computed = np.concatenate([mask[r.y0 : r.y1, r.x0 : r.x1].ravel() for r in regions if r not in skipped])
    assert summary.class_pixels == tuple(np.bincount(computed, minlength=3))  # what the computed chunks predicted
    assert 1 / 3 <= summary.confidence_sum / summary.pixels <= 1
    assert segment_image(job).chunks_computed == 0  # everything done: nothing recomputed


def test_the_next_batch_is_launched_before_this_one_is_collected() -> None:
    """On a GPU the host cuts batch i + 1 while the device computes batch i: launches run one pass ahead of
    collections, and results still come in order."""
    from segpipe.chunk_inference import one_pass_ahead

    events: list[str] = []

    class Recorder:
        def launch(self, batch: np.ndarray) -> object:
            name = f"g{int(batch[0])}"
            events.append(f"launch {name}")
            return lambda: events.append(f"collect {name}") or batch * 10

    groups = [[0], [1], [2]]
    results = list(one_pass_ahead(Recorder(), groups, lambda group: np.array(group, np.float32)))  # type: ignore[arg-type]
    assert [group for group, _ in results] == groups
    assert [float(logits[0]) for _, logits in results] == [0.0, 10.0, 20.0]
    assert events == ["launch g0", "launch g1", "collect g0", "launch g2", "collect g1", "collect g2"]
