"""Fixtures shared by the unit tests: the builtin model and a tiny random TorchScript model with a card."""

from __future__ import annotations

import pytest
import torch

from segpipe.models import ModelRef, resolve_model

from .helpers import TinyNet, save_torchscript, tiny_card


@pytest.fixture(scope="session")
def builtin_ref() -> ModelRef:
    return resolve_model("builtin")


@pytest.fixture(scope="session")
def tiny_ref(tmp_path_factory: pytest.TempPathFactory) -> ModelRef:
    """A random TinyNet (2 bands in, 3 classes out) saved as TorchScript, card giving divisor 2 and halo 8."""
    torch.manual_seed(1234)
    path = tmp_path_factory.mktemp("tiny_model") / "tiny.pt"
    return resolve_model(save_torchscript(TinyNet(), path, tiny_card()))
