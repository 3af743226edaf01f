"""Channels-last layout: the predictor runs torch models in NHWC (faster convolutions, bench/tile_sizes.py) and
gives the same masks as the NCHW layout, with logits equal up to rounding."""

from __future__ import annotations

import numpy as np
import torch

from segpipe.models import resolve_model
from segpipe.models.cache import build_model, model_payload
from segpipe.models.predictor import Predictor, to_channels_last
from segpipe.synthetic import render


def _predictors() -> tuple[Predictor, Predictor]:
    ref, cpu = resolve_model("builtin"), torch.device("cpu")
    nhwc = Predictor(build_model(ref, model_payload(ref), cpu), ref.card, cpu)
    nchw = Predictor(build_model(ref, model_payload(ref), cpu), ref.card, cpu, channels_last=False)
    return nhwc, nchw


def test_channels_last_gives_the_same_masks_as_nchw() -> None:
    nhwc, nchw = _predictors()
    assert nhwc.channels_last, "channels_last=True was not applied"
    assert not nchw.channels_last, "channels_last=False was ignored"
    weight = next(p for p in nhwc.module.parameters() if p.ndim == 4)  # type: ignore[union-attr]
    assert weight.is_contiguous(memory_format=torch.channels_last)
    image, _ = render(0, 200, 0, 312, seed=4)
    batch = np.stack([image, image[::-1]])[:, None].astype(np.float32)
    fast, plain = nhwc(batch), nchw(batch)
    assert fast.flags.c_contiguous, "channels-last logits must come back C-contiguous"
    assert fast.shape == plain.shape == (2, 2, 200, 312)
    np.testing.assert_allclose(fast, plain, atol=1e-4)
    assert np.array_equal(fast.argmax(axis=1), plain.argmax(axis=1))


def test_a_module_that_cannot_convert_keeps_its_layout() -> None:
    class Stubborn(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def to(self, *args: object, **kwargs: object) -> torch.nn.Module:
            if "memory_format" in kwargs:
                raise RuntimeError("no")
            return self

    module, converted = to_channels_last(Stubborn())
    assert isinstance(module, Stubborn)
    assert not converted, "a module that refused channels_last was reported as converted"
