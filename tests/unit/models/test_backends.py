"""The backend registry: every backend loads from bytes and predicts; adding a format is one registration."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segpipe.errors import MAX_ERROR_CHARS, ModelError, one_line
from segpipe.models import (
    Backend,
    load_predictor,
    register_backend,
    registered_backends,
    resolve_model,
    unregister_backend,
)
from segpipe.models.backends import find_for_bytes, get_backend
from segpipe.models.card import ModelCard
from segpipe.models.unet import UNet

from ..helpers import TinyNet, save_torchscript, tiny_card

UNET_CARD = {
    "name": "unet",
    "in_channels": 1,
    "num_classes": 2,
    "class_names": ["bg", "fg"],
    "size_divisor": 2,
    "halo": 16,
    "architecture": {"name": "unet", "base": 4, "depth": 2},
}


def _torchscript(tmp_path: Path) -> str:
    return str(save_torchscript(TinyNet(in_channels=1, num_classes=3), tmp_path / "ts.pt"))


def _state_dict(tmp_path: Path) -> str:
    path = tmp_path / "weights.pt"
    torch.save(UNet(1, 2, base=4, depth=2).state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps(UNET_CARD))
    return str(path)


def _pickle(tmp_path: Path) -> str:
    path = tmp_path / "whole.pt"
    torch.save(UNet(1, 2, base=4, depth=2), path)
    return str(path)


def _onnx(tmp_path: Path) -> str:
    path = tmp_path / "net.onnx"
    module = TinyNet(in_channels=1, num_classes=2).eval()
    axes = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(
        module, (torch.zeros(1, 1, 16, 16),), str(path), dynamo=False, input_names=["x"], dynamic_axes={"x": axes}
    )
    return str(path)


def _bioimageio(tmp_path: Path) -> str:
    from tests.bioimageio_packages import build_package

    return str(build_package(tmp_path / "package"))


SPECS = {
    "bioimageio": _bioimageio,
    "builtin": lambda tmp_path: "builtin",
    "baseline": lambda tmp_path: "baseline",
    "torchscript": _torchscript,
    "state_dict": _state_dict,
    "pickle": _pickle,
    "onnx": _onnx,
}


def test_every_registered_backend_is_covered_here() -> None:
    assert sorted(b.name for b in registered_backends()) == sorted(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_each_backend_loads_and_predicts(tmp_path: Path, name: str) -> None:
    ref = resolve_model(SPECS[name](tmp_path), trust_pickle=True, channels=1)
    assert ref.format == name
    predictor = load_predictor(ref, "cpu")
    batch = np.random.default_rng(0).random((2, 1, 16, 12), np.float32)
    logits = predictor.predict(batch)
    assert logits.shape == (2, ref.card.num_classes, 16, 12)
    assert logits.dtype == np.float32
    np.testing.assert_array_equal(predictor(batch), logits)
    assert predictor.card == ref.card
    assert predictor.device == torch.device("cpu")


class Scale:
    """A toy format: a .npy vector of per-class scales applied to the band mean."""

    def __init__(self, scales: np.ndarray) -> None:
        self.scales = scales

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return batch.mean(axis=1, keepdims=True) * self.scales.reshape(1, -1, 1, 1)


def test_a_new_format_is_one_registration(tmp_path: Path) -> None:
    npy = Backend(
        "npy-scales",
        "toy",
        detect=lambda source: (source.payload or b"")[:6] == b"\x93NUMPY",
        load=lambda payload, card, device: Scale(np.load(io.BytesIO(payload))),
    )
    path = tmp_path / "scales.npy"
    np.save(path, np.array([-1.0, 1.0, 2.0], np.float32))
    register_backend(npy, before="onnx")
    try:
        ref = resolve_model(path, channels=2)
        assert (ref.format, ref.card.num_classes, ref.card.in_channels) == ("npy-scales", 3, 2)
        logits = load_predictor(ref, "cpu")(np.ones((1, 2, 4, 4), np.float32))
        np.testing.assert_array_equal(logits[0, :, 0, 0], [-1.0, 1.0, 2.0])
    finally:
        unregister_backend("npy-scales")
    assert "npy-scales" not in [b.name for b in registered_backends()]


def test_unknown_format_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="unknown model format 'tflite'"):
        get_backend("tflite")


def test_detection_order_puts_torchscript_before_plain_weights(tmp_path: Path) -> None:
    payload = Path(_torchscript(tmp_path)).read_bytes()
    backend = find_for_bytes("model.pt", payload)
    assert backend is not None
    assert backend.name == "torchscript"


def test_one_line_keeps_the_last_line_of_a_torchscript_traceback() -> None:
    exc = RuntimeError("The following operation failed.\nTraceback of TorchScript:\n  File x\nRuntimeError: bad")
    assert one_line(exc) == "RuntimeError: bad"
    assert one_line(ValueError("a\n  b")) == "ValueError: a b"
    assert len(one_line(ValueError("x" * 1000))) == MAX_ERROR_CHARS


def test_card_of_a_loaded_module_is_the_resolved_one(tiny_ref) -> None:
    assert (
        load_predictor(tiny_ref, "cpu").card
        == tiny_ref.card
        == ModelCard(**{**tiny_card(), "class_names": tuple("abc")})
    )
