"""Compile modes (``--compile``): the model a worker loads gives eager's masks; ``eager`` turns the rest off."""

from __future__ import annotations

import io
import shutil
import threading

import numpy as np
import pytest
import torch

from segpipe.cli.parser import build_parser
from segpipe.cli.settings import run_settings
from segpipe.config import InferenceConfig
from segpipe.errors import ConfigError
from segpipe.models import load_predictor, loaded_models, resolve_model
from segpipe.models.backends import torchscript
from segpipe.models.cache import build_model, model_payload
from segpipe.models.optimize import fold_batchnorm, optimize
from segpipe.models.predictor import Predictor
from segpipe.synthetic import render

CPU = torch.device("cpu")


def _window(edge: int = 96, seed: int = 2) -> np.ndarray:
    """A (2, 1, edge, edge) batch of synthetic nuclei, scaled like the pipeline's percentile normalisation."""
    image, _ = render(0, edge, 0, edge, seed=seed)
    low, high = np.percentile(image, (1, 99.8))
    pixels = ((image - low) / (high - low)).astype(np.float32)
    return np.stack([pixels, pixels[::-1].copy()])[:, None]


def _eager() -> Predictor:
    ref = resolve_model("builtin")
    return Predictor(build_model(ref, model_payload(ref), CPU), ref.card, CPU, compile="eager")


def _norms(module: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())


def test_the_pipelines_default_model_gives_eagers_masks() -> None:
    ref = resolve_model("builtin")
    default = InferenceConfig().compile
    pipeline = load_predictor(ref, "cpu", compile=default)  # what segment_chunks loads on a worker
    assert pipeline.compile == default == "fold"
    assert pipeline.module is not None
    assert _norms(pipeline.module) == 0, "fold left batch norms in the model"
    held = [entry for entry in loaded_models() if entry[0] == ref.sha256]
    assert held == [(ref.sha256, "cpu")], "the fold predictor must take over resolve_model's eager one"
    batch = _window()
    fast, plain = pipeline(batch), _eager()(batch)
    np.testing.assert_allclose(fast, plain, atol=1e-4)
    assert np.array_equal(fast.argmax(axis=1), plain.argmax(axis=1))


def test_eager_is_the_off_switch_from_the_command_line() -> None:
    args = build_parser().parse_args(["run", "image.tif", "--compile", "eager"])
    settings = run_settings(args, "builtin", "out")
    assert settings.inference.compile == "eager"
    assert build_parser().parse_args(["run", "image.tif"]).compile == "fold"
    predictor = load_predictor(resolve_model("builtin"), "cpu", compile=settings.inference.compile)
    assert predictor.compile == "eager"
    assert predictor.module is not None
    assert _norms(predictor.module) == 10, "eager must run the model as loaded"
    with pytest.raises(ConfigError, match="--compile must be one of eager, fold, inductor"):
        InferenceConfig(compile="fast")


def test_fold_keeps_convolutions_without_a_batch_norm_after_them() -> None:
    module = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 2, 1)
    ).eval()
    assert fold_batchnorm(module) == 0  # the norm follows a ReLU: folding it into the conv would be wrong
    assert _norms(module) == 1


def test_a_torchscript_model_is_frozen_with_the_same_masks() -> None:
    batch = _window()
    eager = _eager()
    buffer = io.BytesIO()
    assert eager.module is not None
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(eager.module, torch.from_numpy(batch)), buffer)  # type: ignore[no-untyped-call]
    card = eager.card
    frozen = Predictor(torchscript.load(buffer.getvalue(), card, CPU), card, CPU, compile="fold")
    assert frozen.compile == "fold"
    asked = optimize(torchscript.load(buffer.getvalue(), card, CPU), "inductor")
    assert asked.mode == "fold"
    assert "not compiled" in asked.note
    assert np.array_equal(frozen(batch).argmax(axis=1), eager(batch).argmax(axis=1))


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("cc") is None, reason="inductor needs a C++ compiler")
def test_inductor_gives_eagers_masks_and_compiles_once_per_shape() -> None:
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = resolve_model("builtin")
        compiled = Predictor(build_model(ref, model_payload(ref), CPU), ref.card, CPU, compile="inductor")
        assert compiled.compiled
        batch = _window(64)
        before = set(compiled.compile_seconds)
        threads = [threading.Thread(target=compiled, args=(batch,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert list(compiled.compile_seconds) == [((2, 1, 64, 64), "fp32")], "two threads compiled one shape twice"
        assert compiled.compiled_here(before) in (0.0, compiled.compile_seconds[((2, 1, 64, 64), "fp32")])
        fast, plain = compiled(batch), _eager()(batch)
    finally:
        torch.set_num_threads(saved)
    np.testing.assert_allclose(fast, plain, atol=1e-4)
    assert np.array_equal(fast.argmax(axis=1), plain.argmax(axis=1))
