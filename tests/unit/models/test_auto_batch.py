"""``--batch-size auto``: one window per pass on a CPU; on a GPU as many as half its free memory holds, from one
window's measured peak, up to the windows one task has. The GPU probe itself runs only on a GPU (owed here); its
arithmetic and caching are checked with the probe replaced."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segpipe.config import InferenceConfig
from segpipe.errors import ConfigError
from segpipe.models import load_predictor, resolve_model
from segpipe.models.predictor import Predictor, batch_for_memory
from tests.unit.helpers import trim_windows

GIB, MIB = 2**30, 2**20


def test_auto_is_the_default_and_other_values_must_be_positive_integers() -> None:
    assert InferenceConfig().batch_size == "auto"
    assert InferenceConfig(batch_size=8).batch_size == 8
    for bad in (0, -2, "many", 2.5, True):
        with pytest.raises(ConfigError, match="--batch-size must be a positive integer or auto"):
            InferenceConfig(batch_size=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("free", "per_window", "limit", "expected"),
    [
        (8 * GIB, 100 * MIB, 64, 40),  # half of 8 GiB over 100 MiB
        (8 * GIB, 100 * MIB, 16, 16),  # never more than the task's windows
        (50 * MIB, 100 * MIB, 16, 1),  # always at least one
        (8 * GIB, 0, 9, 9),  # nothing measurable: the task's windows
    ],
)
def test_batch_for_memory(free: int, per_window: int, limit: int, expected: int) -> None:
    assert batch_for_memory(free, per_window, limit) == expected


def test_a_cpu_predictor_runs_one_window_per_pass() -> None:
    predictor = load_predictor(resolve_model("builtin"), "cpu")
    assert predictor.batch_size_for(1, 312, 16) == 1


def test_a_gpu_predictor_sizes_its_batch_from_one_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = load_predictor(resolve_model("builtin"), "cpu")
    gpu = Predictor(cpu.module, cpu.card, torch.device("cpu"))  # type: ignore[arg-type]
    gpu.device = torch.device("cuda", 0)  # as a worker on a GPU would hold it; the probe is replaced below
    probes: list[int] = []

    def probe(channels: int, edge: int) -> tuple[int, int]:
        probes.append(edge)
        return 4 * GIB, 64 * MIB

    monkeypatch.setattr(gpu, "_probe_memory", probe)
    assert gpu.batch_size_for(1, 312, 64) == 32
    assert gpu.batch_size_for(1, 312, 64) == 32, "the same arguments again give another size"
    assert gpu.batch_size_for(1, 312, 16) == 16
    assert probes == [312, 312]  # once per (channels, edge, limit, precision)


def test_auto_on_a_cpu_gives_the_same_logits_as_batch_one() -> None:
    predictor = load_predictor(resolve_model("builtin"), "cpu")
    window = np.random.default_rng(7).normal(size=(1, 300 + 56, 300 + 56)).astype(np.float32)
    auto = trim_windows(predictor, window, 28, 128, "auto")
    np.testing.assert_array_equal(auto, trim_windows(predictor, window, 28, 128, 1))
