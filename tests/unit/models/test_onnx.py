"""ONNX models through onnxruntime: exported with torch's TorchScript-based exporter (``dynamo=False``; the
dynamo exporter needs onnxscript, which segpipe does not install)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from segpipe.errors import ModelError, SegpipeWarning
from segpipe.models import load_predictor, resolve_model
from segpipe.models.backends import onnx as onnx_backend
from segpipe.models.backends.builtin import BUILTIN_CARD
from segpipe.models.unet import UNet

from ..helpers import TinyNet

pytest.importorskip("onnxruntime")

DYNAMIC = {0: "batch", 2: "height", 3: "width"}


def export_onnx(module: torch.nn.Module, path: Path, channels: int, card: dict | None = None) -> Path:
    """Export ``module`` with dynamic batch and spatial axes; write ``card`` beside it as JSON if given."""
    torch.onnx.export(
        module.eval(),
        (torch.zeros(1, channels, 32, 32),),
        str(path),
        dynamo=False,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": DYNAMIC, "logits": DYNAMIC},
        opset_version=17,
    )
    if card is not None:
        path.with_suffix(".json").write_text(json.dumps(card))
    return path


@pytest.fixture(scope="module")
def builtin_unet() -> UNet:
    """The shipped U-Net as a plain torch module."""
    card = json.loads(BUILTIN_CARD.read_text())
    options = {k: v for k, v in card["architecture"].items() if k != "name"}
    model = UNet(card["in_channels"], card["num_classes"], **options)
    model.load_state_dict(torch.load(BUILTIN_CARD.with_suffix(".pt"), weights_only=True))
    return model.eval()


def test_exported_builtin_unet_with_its_card_matches_torch(tmp_path: Path, builtin_unet: UNet) -> None:
    card = json.loads(BUILTIN_CARD.read_text())
    path = export_onnx(builtin_unet, tmp_path / "unet.onnx", 1, card)
    ref = resolve_model(path)
    assert ref.format == "onnx"
    assert ref.card.name == card["name"]
    assert ref.assumptions == ()
    batch = np.random.default_rng(0).random((3, 1, 48, 80), np.float32)
    with torch.no_grad():
        expected = builtin_unet(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(load_predictor(ref, "cpu")(batch), expected, atol=1e-4, rtol=0)


def test_exported_builtin_unet_without_card_is_probed(tmp_path: Path, builtin_unet: UNet) -> None:
    ref = resolve_model(export_onnx(builtin_unet, tmp_path / "bare.onnx", 1))
    assert (ref.card.name, ref.card.in_channels, ref.card.num_classes) == ("bare", 1, 2)
    assert ref.assumptions[0].startswith("no model card: assumed 1 input band (declared by the model), 2 classes")


def test_rgb_onnx_model_without_card_is_probed_with_the_images_three_bands(tmp_path: Path) -> None:
    torch.manual_seed(11)
    module = TinyNet(in_channels=3, num_classes=2)
    ref = resolve_model(export_onnx(module, tmp_path / "rgb.onnx", 3), channels=3)
    assert (ref.card.in_channels, ref.card.num_classes) == (3, 2)
    assert ref.assumptions == (
        "no model card: assumed 3 input bands (from the image), 2 classes (from a probe), normalization none, "
        "receptive field unknown (halo 32)",
    )
    batch = np.random.default_rng(1).random((2, 3, 24, 40), np.float32)
    with torch.no_grad():
        expected = module.eval()(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(load_predictor(ref, "cpu")(batch), expected, atol=1e-4, rtol=0)


def test_onnx_model_given_the_wrong_band_count_fails_in_one_line(tmp_path: Path) -> None:
    path = export_onnx(TinyNet(in_channels=3, num_classes=2), tmp_path / "rgb.onnx", 3)
    with pytest.raises(ModelError, match=rf"^{path}: model failed on probe input \(1, 1, 64, 64\)") as caught:
        resolve_model(path, channels=1)
    assert "\n" not in str(caught.value)


def test_corrupt_onnx_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07 certainly not a graph")
    with pytest.raises(ModelError, match=f"{path}: cannot load ONNX model"):
        resolve_model(path)


def test_missing_onnxruntime_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = export_onnx(TinyNet(in_channels=1, num_classes=2), tmp_path / "net.onnx", 1)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(ModelError, match=rf"^{path}: ONNX models need onnxruntime: pip install 'segpipe\[onnx\]'$"):
        resolve_model(path)


def test_providers_put_cuda_first_only_on_a_cuda_device() -> None:
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_backend.providers(torch.device("cpu"), both) == ["CPUExecutionProvider"]
    assert onnx_backend.providers(torch.device("cuda:1"), both) == [
        ("CUDAExecutionProvider", {"device_id": 1}),
        "CPUExecutionProvider",
    ]
    with pytest.warns(SegpipeWarning, match="onnxruntime-gpu"):
        assert onnx_backend.providers(torch.device("cuda"), ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
