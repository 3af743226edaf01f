"""A card's preprocessing steps and output activation (segpipe/preprocessing.py, segpipe/postprocessing.py).

The ImageNet oracle stands in for a segmentation_models_pytorch network, which segpipe runs as its owner's
TorchScript or ONNX export (docs/models.md): smp itself does not import here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from segpipe import normalize
from segpipe.chunk_inference import ChunkJob, ChunkOutputs, Windowing, chunk_windows
from segpipe.config import InferenceConfig
from segpipe.errors import ConfigError
from segpipe.models import ModelCard, load_predictor, resolve_model
from segpipe.normalize import BandStats, StatsRequest
from segpipe.postprocessing import Activation
from segpipe.preprocessing import (
    Binarize,
    Clip,
    EnsureDtype,
    ScaleLinear,
    ScaleRange,
    ZeroMeanUnitVariance,
    preprocess,
    stats_needed,
)
from segpipe.tiling import Region
from segpipe.windows import predict_labels

from ..helpers import TinyNet, save_torchscript, tiny_card, write_zarr

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_STEPS = [
    {"id": "scale_linear", "kwargs": {"gain": 1 / 255}},
    {"id": "zero_mean_unit_variance", "kwargs": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}},
]


def _card(**changes: Any) -> ModelCard:
    return ModelCard.from_dict(tiny_card(**changes), "card.json")


def _pixels(bands: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4000, (bands, 12, 10)).astype(np.uint16)


def test_steps_are_parsed_into_frozen_dataclasses() -> None:
    card = _card(
        preprocessing=[
            {"id": "scale_range", "kwargs": {"min_percentile": 2, "max_percentile": 98}},
            {"id": "scale_linear", "kwargs": {"gain": [2, 3], "offset": 1}},
            {"id": "clip", "kwargs": {"min": 0, "max": 1}},
            {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
        ]
    )
    assert card.preprocessing == (
        ScaleRange(2.0, 98.0),
        ScaleLinear((2.0, 3.0), (1.0,)),
        Clip(0.0, 1.0),
        EnsureDtype("float32"),
    )


def test_the_old_percentile_normalization_is_a_scale_range_step() -> None:
    assert _card(normalization="percentile").input_steps == (ScaleRange(1.0, 99.8),)


def test_the_percentile_step_scales_exactly_as_the_old_normalization() -> None:
    data = _pixels()
    stats = BandStats.from_samples(data)
    out = preprocess(data, _card(normalization="percentile").input_steps, stats)
    np.testing.assert_array_equal(out, normalize.apply(data, stats))


def test_card_round_trips_through_its_dict() -> None:
    card = _card(in_channels=3, preprocessing=IMAGENET_STEPS, postprocessing="softmax")
    assert ModelCard.from_dict(card.to_dict(), "again.json") == card


def test_scale_linear_per_band() -> None:
    data = _pixels()
    out = preprocess(data, (ScaleLinear((2.0, 0.5), (1.0, -3.0)),), None)
    np.testing.assert_allclose(out[0], data[0] * 2.0 + 1.0)
    np.testing.assert_allclose(out[1], data[1] * 0.5 - 3.0)


def test_scale_range_uses_the_measured_percentiles() -> None:
    data = _pixels()
    step = ScaleRange(5.0, 95.0)
    stats = BandStats.from_samples(data, stats_needed([step]))
    low, high = np.percentile(data.reshape(2, -1), [5.0, 95.0], axis=1)
    out = preprocess(data, (step,), stats)
    np.testing.assert_allclose(out[1], (data[1] - low[1]) / (high[1] - low[1]), rtol=1e-5)


def test_zero_mean_unit_variance_measured_over_the_image() -> None:
    data = _pixels()
    step = ZeroMeanUnitVariance()
    stats = BandStats.from_samples(data, stats_needed([step]))
    out = preprocess(data, (step,), stats)
    flat = data.reshape(2, -1).astype(np.float64)
    expected = (data[0] - flat[0].mean()) / (flat[0].std() + 1e-6)
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-5)


def test_zero_mean_unit_variance_with_fixed_values() -> None:
    data = _pixels()
    out = preprocess(data, (ZeroMeanUnitVariance((100.0, 200.0), (10.0, 20.0), eps=0.0),), None)
    np.testing.assert_allclose(out[1], (data[1] - 200.0) / 20.0, rtol=1e-6)


VALUES = np.array([[[-3.0, 0.25, 0.75, 300.5]]], np.float32)


def test_clip() -> None:
    assert preprocess(VALUES, (Clip(0.0, 1.0),), None).tolist() == [[[0.0, 0.25, 0.75, 1.0]]]


def test_binarize() -> None:
    assert preprocess(VALUES, (Binarize((0.5,)),), None).tolist() == [[[0.0, 0.0, 1.0, 1.0]]]


def test_ensure_dtype_clips_to_the_range_and_truncates() -> None:
    assert preprocess(VALUES, (EnsureDtype("uint8"),), None).tolist() == [[[0.0, 0.0, 0.0, 255.0]]]


def test_the_statistics_pass_measures_the_percentiles_a_step_reads() -> None:
    assert stats_needed([ScaleRange(2.0, 98.0), Clip(0.0, 1.0)]) == StatsRequest((2.0, 98.0))


def test_the_statistics_pass_measures_the_moments_a_step_reads() -> None:
    assert stats_needed([ZeroMeanUnitVariance()]) == StatsRequest(moments=True)


def test_fixed_values_need_no_statistics() -> None:
    assert stats_needed([ZeroMeanUnitVariance((1.0,), (2.0,)), ScaleLinear()]) == StatsRequest()


def test_a_measured_step_without_statistics_is_refused() -> None:
    with pytest.raises(ValueError, match="scale_range measures the image"):
        preprocess(_pixels(), (ScaleRange(),), None)


@pytest.mark.parametrize(
    ("steps", "fragment"),
    [
        ([{"id": "zscore"}], "preprocessing step 1: unknown step 'zscore'"),
        ([{"id": "clip", "kwargs": {"min": 0}}, {"id": "clip"}], r"step 2: clip: missing parameter 'min'"),
        ([{"id": "binarize"}], "binarize: missing parameter 'threshold'"),
        ([{"id": "ensure_dtype"}], "ensure_dtype: missing parameter 'dtype'"),
        ([{"id": "scale_linear"}], "scale_linear: missing parameter 'gain'"),
        ([{"id": "zero_mean_unit_variance", "kwargs": {"mean": [1, 2]}}], "missing parameter 'std'"),
        ([{"id": "zero_mean_unit_variance", "kwargs": {"mean": [1, 2], "std": [1, 0]}}], "std must be > 0"),
        ([{"id": "zero_mean_unit_variance", "kwargs": {"mean": [1, 2], "std": [1]}}], "2 mean values but 1 std"),
        ([{"id": "scale_range", "kwargs": {"min_percentile": 90, "max_percentile": 10}}], "min_percentile <"),
        ([{"id": "clip", "kwargs": {"low": 0}}], "clip: unknown parameter 'low'"),
        ({"id": "clip"}, "preprocessing must be a list of steps"),
        ([{"id": "scale_linear", "kwargs": {"gain": 2}}, {"id": "scale_range"}], r"step 2 \(scale_range\) measures"),
    ],
)
def test_bad_steps_are_one_config_error_line_naming_the_card(steps: Any, fragment: str) -> None:
    with pytest.raises(ConfigError, match=f"^card.json: .*{fragment}"):
        _card(preprocessing=steps)


def test_mean_and_std_of_the_wrong_band_count_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"^card.json: preprocessing step 2 \(zero_mean_unit_variance\): 3 mean"):
        _card(in_channels=2, preprocessing=IMAGENET_STEPS)


def test_preprocessing_and_normalization_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="give preprocessing or normalization, not both"):
        _card(normalization="percentile", preprocessing=IMAGENET_STEPS)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("tanh", "unknown postprocessing 'tanh'"),
        ({"id": "sigmoid", "kwargs": {"threshold": 1.5}}, r"threshold must be in \(0, 1\)"),
        ({"id": "softmax", "kwargs": {"threshold": 0.5}}, "softmax: unknown parameter 'threshold'"),
    ],
)
def test_bad_postprocessing_is_one_config_error_line(value: Any, fragment: str) -> None:
    with pytest.raises(ConfigError, match=f"^card.json: .*{fragment}"):
        _card(postprocessing=value)


def test_sigmoid_logit_becomes_two_class_logits_with_the_sigmoid_as_softmax() -> None:
    z = np.array([-2.0, 0.0, 0.3, 4.0], np.float32).reshape(1, 1, 1, 4)
    logits = Activation("sigmoid").to_logits(z)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities[0, 1, 0], 1 / (1 + np.exp(-z[0, 0, 0])), rtol=1e-6)


def test_sigmoid_threshold_picks_class_one_above_it() -> None:
    z = np.array([-2.0, 0.0, 0.3, 4.0], np.float32).reshape(1, 1, 1, 4)
    activation = Activation("sigmoid", threshold=0.6)  # sigmoid(z): 0.12, 0.5, 0.574, 0.982
    predicted = predict_labels(activation.to_logits(z)[0], True, activation.label_bias())
    assert predicted.labels.tolist() == [[0, 0, 0, 1]]


def test_sigmoid_confidence_is_the_probability_of_the_chosen_label() -> None:
    z = np.array([0.3], np.float32).reshape(1, 1, 1, 1)
    activation = Activation("sigmoid", threshold=0.6)
    predicted = predict_labels(activation.to_logits(z)[0], False, activation.label_bias())
    assert predicted.confidence_sum == pytest.approx(1 - 1 / (1 + np.exp(-0.3)), rel=1e-6)


def test_probabilities_from_a_model_without_activation_are_kept() -> None:
    p = np.array([0.2, 0.7, 0.1], np.float32).reshape(1, 3, 1, 1)
    predicted = predict_labels(Activation("none").to_logits(p)[0], True)
    np.testing.assert_allclose(predicted.probabilities[:, 0, 0], [0.2, 0.7, 0.1], atol=1e-3)  # float16


class OneLogit(torch.nn.Module):
    """A single-logit binary model: the first band minus 0.5, so class 1 is where the band exceeds 0.5 + logit(t)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] - 0.5


def test_a_sigmoid_model_resolves_to_two_classes(tmp_path: Path) -> None:
    card = tiny_card(num_classes=2, class_names=["background", "fg"], postprocessing="sigmoid", in_channels=1)
    ref = resolve_model(save_torchscript(OneLogit(), tmp_path / "one.pt", card))
    assert ref.card.num_classes == 2


def test_a_two_channel_model_declared_sigmoid_is_refused_at_the_probe(tmp_path: Path) -> None:
    card = tiny_card(num_classes=2, class_names=["a", "b"], postprocessing="sigmoid")
    with pytest.raises(Exception, match="a sigmoid model must output one channel"):
        resolve_model(save_torchscript(TinyNet(num_classes=2), tmp_path / "two.pt", card))


def _export(net: torch.nn.Module, how: str, path: Path, card: dict[str, Any]) -> Path:
    """``net`` saved as its owner would export it: scripted, traced (at another size than the window) or ONNX."""
    if how == "script":
        return save_torchscript(net, path.with_suffix(".pt"), card)
    example = torch.zeros(1, 3, 64, 64)
    if how == "trace":
        torch.jit.trace(net, example).save(str(path.with_suffix(".pt")))
        path = path.with_suffix(".pt")
    else:
        pytest.importorskip("onnxruntime", reason="the ONNX export needs segpipe[onnx]")
        dynamic = {0: "batch", 2: "height", 3: "width"}
        path = path.with_suffix(".onnx")
        torch.onnx.export(
            net, (example,), str(path), dynamo=False, input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": dynamic, "logits": dynamic}, opset_version=17,
        )  # fmt: skip
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


@pytest.mark.parametrize("how", ["script", "trace", "onnx"])
def test_imagenet_normalised_logits_equal_the_network_on_the_hand_normalised_window(tmp_path: Path, how: str) -> None:
    torch.manual_seed(7)
    net = TinyNet(in_channels=3, num_classes=3).eval()
    card = tiny_card(in_channels=3, preprocessing=IMAGENET_STEPS)
    ref = resolve_model(_export(net, how, tmp_path / "rgb", card))
    image = np.random.default_rng(3).integers(0, 256, (3, 40, 40)).astype(np.uint8)
    source = write_zarr(tmp_path / "rgb.zarr", image)
    halo, region = 8, Region(8, 24, 8, 24)  # a 16 x 16 tile well inside the image: its window is real pixels
    job = ChunkJob(source, ref, Windowing(16, 16, halo), InferenceConfig(device="cpu"), ChunkOutputs("unused"))
    window = chunk_windows(job, ref.card, region).cut(0)
    logits = load_predictor(ref, "cpu").predict(window[np.newaxis])[0]
    crop = image[:, region.y0 - halo : region.y1 + halo, region.x0 - halo : region.x1 + halo].astype(np.float32)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    by_hand = (torch.from_numpy(crop) / 255.0 - mean) / std
    with torch.no_grad():
        expected = net(by_hand[None])[0].numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)
