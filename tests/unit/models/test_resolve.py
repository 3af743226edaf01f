"""Resolving a model spec: format detection through the backend registry, cards, probing, refusals."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from segpipe.errors import ModelError
from segpipe.models import BUILTIN_NAME, ModelCard, load_predictor, resolve_model
from segpipe.models.unet import UNet

from ..helpers import TinyNet, save_torchscript, tiny_card

UNET_CARD = {
    "name": "my-unet",
    "in_channels": 1,
    "num_classes": 2,
    "class_names": ["bg", "fg"],
    "size_divisor": 2,
    "halo": 16,
    "normalization": "percentile",
    "architecture": {"name": "unet", "base": 4, "depth": 2},
}


class Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class Downsample(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class OneClass(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Touch:
    """Unpickling this object creates a file: proof that pickled code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_builtin_model_resolves_with_two_classes(builtin_ref) -> None:
    card = builtin_ref.card
    assert builtin_ref.format == "builtin"
    assert builtin_ref.uri == BUILTIN_NAME
    assert Path(builtin_ref.path).name == "unet_nuclei.pt"
    assert card.num_classes == 2
    assert len(card.class_names) == 2
    assert card.in_channels == 1
    architecture = {k: v for k, v in card.architecture.items() if k != "name"}
    assert card.halo >= UNet(**architecture).receptive_field_radius
    assert card.size_divisor == 2 ** (card.architecture["depth"] - 1)
    assert len(builtin_ref.sha256) == 64
    assert builtin_ref.assumptions == ()


def test_torchscript_model_without_card_has_its_classes_probed(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = save_torchscript(TinyNet(in_channels=1, num_classes=4), tmp_path / "scripted.pt")
    ref = resolve_model(path)
    assert ref.format == "torchscript"
    assert ref.uri == str(path)
    assert ref.card.num_classes == 4
    assert ref.card.class_names == ("class_0", "class_1", "class_2", "class_3")
    assert ref.card.in_channels is None
    assert ref.card.name == "scripted"
    assert ref.assumptions == (
        "no model card: assumed 1 input band (a guess: pass the image's band count), 4 classes (from a probe), "
        "normalization none, receptive field unknown (halo 32)",
    )
    logits = load_predictor(ref, "cpu")(np.zeros((2, 1, 8, 6), np.float32))
    assert logits.shape == (2, 4, 8, 6)
    assert logits.dtype == np.float32


def test_torchscript_model_without_card_is_probed_with_the_images_bands(tmp_path: Path) -> None:
    """An RGB model with no card: 1 band fails; the image's 3 bands are what the probe must use."""
    torch.manual_seed(5)
    path = save_torchscript(TinyNet(in_channels=3, num_classes=2), tmp_path / "rgb.pt")
    ref = resolve_model(path, channels=3)
    assert (ref.card.in_channels, ref.card.num_classes) == (3, 2)
    assert ref.assumptions == (
        "no model card: assumed 3 input bands (from the image), 2 classes (from a probe), normalization none, "
        "receptive field unknown (halo 32)",
    )
    rgb = np.random.default_rng(0).random((1, 3, 16, 16), np.float32)
    assert load_predictor(ref, "cpu").predict(rgb).shape == (1, 2, 16, 16)


def test_torchscript_model_with_card(tiny_ref) -> None:
    assert tiny_ref.format == "torchscript"
    assert tiny_ref.card == ModelCard(**{**tiny_card(), "class_names": ("a", "b", "c")})
    assert tiny_ref.assumptions == ()


def test_state_dict_with_card_loads_a_unet(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = UNet(1, 2, base=4, depth=2).eval()
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps(UNET_CARD))
    ref = resolve_model(path)
    assert ref.format == "state_dict"
    assert ref.card.name == "my-unet"
    batch = np.random.default_rng(0).normal(size=(1, 1, 16, 12)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(load_predictor(ref, "cpu")(batch), expected, rtol=1e-5, atol=1e-6)


def test_state_dict_that_does_not_match_its_card_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(UNet(1, 2, base=8, depth=2).state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps(UNET_CARD))  # card says base 4
    with pytest.raises(ModelError, match="do not match") as caught:
        resolve_model(path)
    assert "\n" not in str(caught.value)


def test_state_dict_with_an_unknown_architecture_names_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(UNet(1, 2, base=4, depth=2).state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps({**UNET_CARD, "architecture": {"name": "resnet"}}))
    with pytest.raises(ModelError, match="'unet'.*'resnet'"):
        resolve_model(path)


def test_state_dict_without_card_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(UNet(1, 2, base=4, depth=2).state_dict(), path)
    with pytest.raises(ModelError, match="model card"):
        resolve_model(path)


def test_plain_pickle_is_refused_without_unpickling(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3], "payload": Touch(sentinel)}))
    with pytest.raises(ModelError, match="never unpickles"):
        resolve_model(path)
    assert not sentinel.exists()


@pytest.mark.parametrize("with_card", [False, True])
def test_torch_save_of_a_full_module_is_refused(tmp_path: Path, with_card: bool) -> None:
    path = tmp_path / "module.pt"
    torch.save(UNet(1, 2, base=4, depth=2), path)  # the object, not its state_dict
    if with_card:
        path.with_suffix(".json").write_text(json.dumps(UNET_CARD))
    with pytest.raises(ModelError, match=str(path)):
        resolve_model(path)


def test_torch_save_of_code_is_refused_without_running_it(tmp_path: Path) -> None:
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "x": Touch(sentinel)}, path)
    path.with_suffix(".json").write_text(json.dumps(UNET_CARD))
    with pytest.raises(ModelError, match="refused"):
        resolve_model(path)
    assert not sentinel.exists()


@pytest.mark.parametrize(
    "content", [os.urandom(4096), b"", b"PK\x03\x04 not really a zip"], ids=["random", "empty", "fake-zip"]
)
def test_non_model_bytes_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=str(path)):
        resolve_model(path)


def test_missing_model_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such model file"):
        resolve_model(tmp_path / "absent.pt")


@pytest.mark.parametrize(
    ("module", "got"),
    [(Flatten(), r"\(1, 4096\)"), (Downsample(), r"\(1, 2, 32, 32\)"), (OneClass(), r"\(1, 1, 64, 64\)")],
    ids=["2-d-output", "downsampling", "one-class"],
)
def test_model_with_wrong_output_names_the_shapes(tmp_path: Path, module: nn.Module, got: str) -> None:
    path = save_torchscript(module, tmp_path / "bad.pt")
    expected = rf"{path}: probe input \(1, 1, 64, 64\) gave output {got}; expected \(1, classes >= 2, 64, 64\)$"
    with pytest.raises(ModelError, match=expected):
        resolve_model(path)


def test_model_that_fails_its_probe_gives_one_line_naming_file_and_shapes(tmp_path: Path) -> None:
    """A 2-band TorchScript model given a 3-band image: TorchScript's multi-line traceback becomes one line."""
    path = save_torchscript(TinyNet(in_channels=2), tmp_path / "two_bands.pt")
    with pytest.raises(ModelError) as caught:
        resolve_model(path, channels=3)
    message = str(caught.value)
    assert "\n" not in message, message
    assert "Traceback" not in message, message
    assert message.startswith(f"{path}: model failed on probe input (1, 3, 64, 64) (expected output (1, classes")
    assert "expected input[1, 3, 64, 64] to have 2 channels" in message


def test_card_class_count_must_match_the_model(tmp_path: Path) -> None:
    path = save_torchscript(TinyNet(), tmp_path / "tiny.pt", tiny_card(num_classes=5, class_names=list("abcde")))
    with pytest.raises(ModelError, match=r"gave output \(1, 3, 64, 64\); expected \(1, 5, 64, 64\) \(its card says 5"):
        resolve_model(path)


def test_invalid_card_is_refused(tmp_path: Path) -> None:
    path = save_torchscript(TinyNet(), tmp_path / "tiny.pt")
    path.with_suffix(".json").write_text('{"name": "x", "no_such_field": 1}')
    with pytest.raises(ModelError, match="invalid model card"):
        resolve_model(path)


def test_fully_pickled_module_loads_only_when_trusted(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = UNet(1, 3, base=4, depth=2).eval()
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    with pytest.raises(ModelError, match="--trust-model-pickle"):
        resolve_model(path)
    ref = resolve_model(path, trust_pickle=True)
    assert ref.format == "pickle"
    assert ref.card.num_classes == 3
    batch = np.random.default_rng(1).normal(size=(1, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(load_predictor(ref, "cpu")(batch), expected, rtol=1e-5, atol=1e-6)


def test_trust_pickle_changes_nothing_for_plain_weights_and_plain_pickles(tmp_path: Path) -> None:
    weights = tmp_path / "weights.pt"
    torch.save(UNet(1, 2, base=4, depth=2).state_dict(), weights)
    weights.with_suffix(".json").write_text(json.dumps(UNET_CARD))
    assert resolve_model(weights, trust_pickle=True).format == "state_dict"
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(UNet(1, 2, base=4, depth=2)))
    with pytest.raises(ModelError, match="never unpickles"):
        resolve_model(plain, trust_pickle=True)


def test_trusted_pickle_that_is_not_a_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "things.pt"
    torch.save({"weights": torch.zeros(2), "module": Flatten()}, path)  # a dict holding a module
    with pytest.raises(ModelError, match="not a torch.nn.Module"):
        resolve_model(path, trust_pickle=True)


def test_model_is_read_from_a_url(tmp_path: Path) -> None:
    """A ``file://`` URL goes through segpipe.storage (or fsspec); its card is found beside it the same way."""
    torch.manual_seed(8)
    path = save_torchscript(TinyNet(), tmp_path / "remote.pt", tiny_card(name="remote"))
    ref = resolve_model(path.as_uri())
    assert ref.uri == ref.path == path.as_uri()
    assert ref.card.name == "remote"
    assert ref.sha256 == resolve_model(path).sha256
