"""Reduced precision: bf16 autocast runs the same loaded model (nothing reloaded) and its mask is compared with
fp32's (here on the CPU, where torch autocasts bf16; the GPU owes the same check)."""

from __future__ import annotations

import numpy as np
import pytest

from segpipe.config import InferenceConfig
from segpipe.errors import ConfigError
from segpipe.models import load_predictor, resolve_model
from segpipe.synthetic import render


def test_bf16_agrees_with_fp32_on_nearly_every_pixel() -> None:
    fp32 = load_predictor(resolve_model("builtin"), "cpu")
    bf16 = fp32.at_precision("bf16")
    assert bf16.module is fp32.module, "at_precision must share the module, not copy it"
    assert bf16 is not fp32, "at_precision must return a new predictor"
    assert fp32.precision == "fp32"
    image, truth = render(0, 256, 0, 256, seed=3)
    batch = image[None, None].astype(np.float32)
    full, reduced = fp32(batch), bf16(batch)
    assert reduced.dtype == np.float32
    assert reduced.shape == full.shape
    agreement = float((full.argmax(axis=1) == reduced.argmax(axis=1)).mean())
    assert agreement > 0.99, agreement
    assert not np.array_equal(full, reduced)  # autocast really ran in bf16


def test_precision_is_validated() -> None:
    with pytest.raises(ConfigError, match="--precision"):
        InferenceConfig(precision="int8")
    with pytest.raises(ValueError, match="precision"):
        load_predictor(resolve_model("builtin"), "cpu").at_precision("fp64")
