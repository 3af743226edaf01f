"""Test-time augmentation (segpipe/tta.py, Predictor.with_tta): copies mapped back and averaged; tiled == whole."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import zarr

from segpipe.chunk_inference import ChunkJob, ChunkOutputs, Windowing, create_mask, read_window, segment_image
from segpipe.config import InferenceConfig, TilingConfig
from segpipe.errors import ConfigError
from segpipe.models import ModelRef, Predictor, load_predictor
from segpipe.models.card import ModelCard
from segpipe.stages.plan import plan_batch
from segpipe.stages.settings import RunSettings
from segpipe.tiling import Region
from segpipe.tta import TRANSFORMS, augment, merge

from ..helpers import TinyNet, blend_windows, save_torchscript, tiny_card, write_zarr

CPU = torch.device("cpu")


def _image(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(height * 100 + width).normal(0, 1, (2, height, width)).astype(np.float32)


@pytest.mark.parametrize("mode", ["flips", "d4"])
def test_every_transform_is_undone_by_its_inverse(mode: str) -> None:
    batch = np.arange(2 * 3 * 5 * 5, dtype=np.float32).reshape(2, 3, 5, 5)
    for transform in TRANSFORMS[mode]:
        np.testing.assert_array_equal(transform.inverse(transform.forward(batch)), batch)


def test_the_group_sizes() -> None:
    assert [len(TRANSFORMS[m]) for m in ("none", "flips", "d4")] == [1, 4, 8]


def test_d4_holds_eight_distinct_transforms() -> None:
    square = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    images = {t.forward(square).tobytes() for t in TRANSFORMS["d4"]}
    assert len(images) == 8


def test_d4_refuses_windows_that_are_not_square() -> None:
    with pytest.raises(ConfigError, match="--tta d4 needs square windows, got 4 x 6"):
        augment(np.zeros((1, 1, 4, 6), np.float32), TRANSFORMS["d4"])


def test_flips_accept_windows_that_are_not_square() -> None:
    assert augment(np.zeros((2, 1, 4, 6), np.float32), TRANSFORMS["flips"]).shape == (8, 1, 4, 6)


def test_merge_averages_the_softmax_of_the_copies_mapped_back() -> None:
    group = TRANSFORMS["flips"]
    logits = np.random.default_rng(0).normal(0, 2, (4, 3, 5, 6)).astype(np.float32)  # 4 copies of one window
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expected = np.mean([t.inverse(softmax[i : i + 1]) for i, t in enumerate(group)], axis=0)
    merged = merge(logits, group)
    np.testing.assert_allclose(np.exp(merged), expected, rtol=1e-5)


class Pointwise(torch.nn.Module):
    """A 1x1 convolution: equivariant under every flip and transpose, so TTA must change nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@pytest.mark.parametrize("mode", ["flips", "d4"])
def test_an_equivariant_model_gives_the_same_probabilities_under_tta(mode: str) -> None:
    torch.manual_seed(0)
    card = ModelCard("pointwise", 2, 3, ("a", "b", "c"), size_divisor=1)
    plain = Predictor(Pointwise(), card, CPU)
    batch = _image(12, 12)[np.newaxis]
    expected = torch.softmax(torch.from_numpy(plain.predict(batch)), 1).numpy()
    augmented = np.exp(plain.with_tta(mode).predict(batch))
    np.testing.assert_allclose(augmented, expected, rtol=1e-5, atol=1e-6)


def test_tta_changes_the_probabilities_of_a_model_that_is_not_equivariant(tiny_ref: ModelRef) -> None:
    predictor = load_predictor(tiny_ref, "cpu")
    batch = _image(16, 16)[np.newaxis]
    plain = torch.softmax(torch.from_numpy(predictor.predict(batch)), 1).numpy()
    augmented = np.exp(predictor.with_tta("flips").predict(batch))
    assert np.abs(augmented - plain).max() > 1e-3


def test_the_auto_batch_on_a_cpu_stays_one_window(tiny_ref: ModelRef) -> None:
    assert load_predictor(tiny_ref, "cpu").with_tta("d4").batch_size_for(2, 32, 10) == 1


def test_an_unknown_tta_mode_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--tta must be one of none, flips, d4, got 'rot90'"):
        InferenceConfig(tta="rot90")


def test_the_tta_setting_round_trips_through_the_run_settings() -> None:
    settings = replace(RunSettings(), inference=InferenceConfig(tta="d4"))
    assert RunSettings.from_dict(settings.to_dict()).inference.tta == "d4"


def _whole_image_labels(predictor: Predictor, image: np.ndarray, halo: int) -> np.ndarray:
    """One (augmented) prediction of the whole image, mirror-padded by the halo and up to the size divisor."""
    _, height, width = image.shape
    divisor = predictor.card.size_divisor
    extra_y, extra_x = -(height + 2 * halo) % divisor, -(width + 2 * halo) % divisor
    padded = np.pad(image, ((0, 0), (halo, halo + extra_y), (halo, halo + extra_x)), mode="symmetric")
    logits = predictor.predict(padded[np.newaxis])[0]
    return logits[:, halo : halo + height, halo : halo + width].argmax(axis=0)


def _tiled(tmp_path: Path, ref: ModelRef, image: np.ndarray, windowing: Windowing, tta: str) -> np.ndarray:
    source = write_zarr(tmp_path / "input.zarr", image, chunks=(2, 13, 11))
    mask = str(tmp_path / "mask.zarr")
    create_mask(mask, source.height, source.width, windowing.chunk, ref.card.num_classes)
    inference = InferenceConfig(batch_size=3, device="cpu", tta=tta)
    segment_image(ChunkJob(source, ref, windowing, inference, ChunkOutputs(mask)))
    return np.asarray(zarr.open_array(mask, mode="r")[:])


@pytest.mark.parametrize(("mode", "height", "width"), [("flips", 37, 53), ("flips", 5, 70), ("d4", 40, 40)])
def test_tiled_tta_equals_whole_image_tta(
    tmp_path: Path, tiny_ref: ModelRef, mode: str, height: int, width: int
) -> None:
    image = _image(height, width)
    halo = tiny_ref.card.default_halo
    mask = _tiled(tmp_path, tiny_ref, image, Windowing(16, 8, halo), mode)
    expected = _whole_image_labels(load_predictor(tiny_ref, "cpu").with_tta(mode), image, halo)
    np.testing.assert_array_equal(mask, expected)


def test_tiled_tta_differs_from_no_tta(tmp_path: Path, tiny_ref: ModelRef) -> None:
    image = _image(40, 40)
    halo = tiny_ref.card.default_halo
    plain = _whole_image_labels(load_predictor(tiny_ref, "cpu"), image, halo)
    assert (_tiled(tmp_path, tiny_ref, image, Windowing(16, 8, halo), "d4") != plain).any()


def test_gaussian_stitched_tta_equals_whole_image_tta(tmp_path: Path, tiny_ref: ModelRef) -> None:
    image = _image(30, 45)
    mask = _tiled(tmp_path, tiny_ref, image, Windowing(16, 16, 0, stitch="gaussian", stride=8), "flips")
    source = write_zarr(tmp_path / "again.zarr", image)
    region = Region(0, 30, 0, 45)
    predictor = load_predictor(tiny_ref, "cpu").with_tta("flips")
    logits = blend_windows(predictor, read_window(source, region, 16), region, 16, 8, 4)
    np.testing.assert_array_equal(mask, logits.argmax(axis=0))


def _infer_key(tmp_path: Path, card: dict[str, Any], tta: str = "none") -> str:
    """The infer key of one image under ``card`` (the same weights and image every call) and ``tta``."""
    model, image = tmp_path / "model.pt", tmp_path / "scan.zarr"
    if not model.exists():
        save_torchscript(TinyNet(), model)
        zarr.create_array(image, data=_image(20, 20), chunks=(2, 20, 20))
    model.with_suffix(".json").write_text(json.dumps(card))
    settings = RunSettings(
        model=str(model),
        out=str(tmp_path / "out"),
        tiling=TilingConfig(chunk=16, tile=8),
        inference=InferenceConfig(device="cpu", tta=tta),
    )
    return plan_batch([str(image)], None, settings).jobs[0].infer_key


def test_the_infer_key_is_the_same_for_the_same_model_and_settings(tmp_path: Path) -> None:
    assert _infer_key(tmp_path, tiny_card()) == _infer_key(tmp_path, tiny_card())


def test_tta_is_part_of_the_infer_key(tmp_path: Path) -> None:
    assert _infer_key(tmp_path, tiny_card(), "flips") != _infer_key(tmp_path, tiny_card(), "none")


def test_preprocessing_is_part_of_the_infer_key(tmp_path: Path) -> None:
    scaled = tiny_card(preprocessing=[{"id": "scale_linear", "kwargs": {"gain": 0.5}}])
    assert _infer_key(tmp_path, scaled) != _infer_key(tmp_path, tiny_card())


def test_postprocessing_is_part_of_the_infer_key(tmp_path: Path) -> None:
    none = tiny_card(postprocessing="none")
    assert _infer_key(tmp_path, none) != _infer_key(tmp_path, tiny_card())
