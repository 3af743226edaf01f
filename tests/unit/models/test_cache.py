"""Workers own their models: bytes installed once, each model built once per process and device, from bytes."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from segpipe.errors import ModelError
from segpipe.models import (
    cache,
    install_model,
    load_predictor,
    loaded_models,
    model_payload,
    resolve_model,
    uninstall_model,
)

from ..helpers import TinyNet, save_torchscript, tiny_card

WORKER = """
import json, os, pickle, sys
import numpy as np
from segpipe.errors import ModelError
from segpipe.models import install_model, load_predictor, loaded_models

ref, payload, batch = pickle.load(sys.stdin.buffer)
result = {"file_exists": os.path.exists(ref.uri), "before": loaded_models()}
try:
    load_predictor(ref, "cpu")
except ModelError as exc:
    result["without_install"] = str(exc)
install_model(ref, payload)
first, second = load_predictor(ref, "cpu"), load_predictor(ref, "auto")
result["same"] = first is second
result["after"] = loaded_models()
result["logits"] = first(batch).tolist()
print(json.dumps(result))
"""


def _fresh_model(tmp_path: Path, seed: int, name: str = "model.pt") -> Path:
    """A TorchScript TinyNet with weights no other test uses (so its sha256 is new to this process)."""
    torch.manual_seed(seed)
    return save_torchscript(TinyNet(), tmp_path / name, tiny_card())


def test_load_predictor_loads_once_per_process_and_device(tmp_path: Path) -> None:
    ref = resolve_model(_fresh_model(tmp_path, 99))
    first = load_predictor(ref, "cpu")
    second = load_predictor(ref, "cpu", torch_threads=1)
    assert first is second, "the second load_predictor loaded the model again"
    assert first.card == ref.card
    assert loaded_models().count((ref.sha256, "cpu")) == 1
    if not torch.cuda.is_available():
        assert load_predictor(ref, "auto") is first  # auto is this process's device: the CPU here


def test_model_loads_on_a_worker_from_installed_bytes_with_no_file_on_disk(tmp_path: Path) -> None:
    """A fresh process stands in for a worker that shares no disk: the file is gone; only the bytes travel."""
    path = _fresh_model(tmp_path, 7)
    ref = resolve_model(path)
    payload = model_payload(ref)
    batch = np.random.default_rng(0).random((1, 2, 8, 8), np.float32)
    expected = load_predictor(ref, "cpu")(batch)
    path.unlink()
    shipped = pickle.dumps((ref, payload, batch))
    done = subprocess.run([sys.executable, "-c", WORKER], input=shipped, capture_output=True, timeout=300, check=True)
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert result["file_exists"] is False
    assert result["before"] == []
    assert result["without_install"] == f"{path}: cannot read the model (No such file or directory)"
    assert result["same"] is True
    assert result["after"] == [[ref.sha256, "cpu"]]  # two calls, one load
    np.testing.assert_allclose(np.array(result["logits"], np.float32), expected, rtol=1e-6, atol=1e-6)


def test_installed_bytes_must_be_the_models(tmp_path: Path) -> None:
    ref = resolve_model(_fresh_model(tmp_path, 21))
    with pytest.raises(ModelError, match=f"{ref.uri}: installed bytes have sha256"):
        install_model(ref, b"something else")


def test_a_worker_without_installed_bytes_reads_the_uri_and_checks_it(tmp_path: Path) -> None:
    path = _fresh_model(tmp_path, 31)
    ref = resolve_model(path)
    uninstall_model(ref)
    assert ref.sha256 not in [sha for sha, _ in loaded_models()]
    predictor = load_predictor(ref, "cpu")  # reads the file itself
    assert load_predictor(ref, "cpu") is predictor
    uninstall_model(ref)
    _fresh_model(tmp_path, 32)  # the file is replaced by other weights
    with pytest.raises(ModelError, match=f"{path}: the model changed since it was resolved"):
        model_payload(ref)


def test_same_bytes_under_another_card_is_another_model(tmp_path: Path) -> None:
    path = _fresh_model(tmp_path, 41)
    ref = resolve_model(path)
    other = resolve_model(path, card=tiny_card(name="renamed"))
    assert other.sha256 == ref.sha256
    assert load_predictor(other, "cpu") is not load_predictor(ref, "cpu")
    assert load_predictor(other, "cpu").card.name == "renamed"


def test_least_recently_used_models_are_forgotten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache, "MAX_MODELS", 2)
    refs = [resolve_model(_fresh_model(tmp_path, 50 + i, f"m{i}.pt")) for i in range(3)]
    held = {sha for sha, _ in loaded_models()}
    assert refs[0].sha256 not in held
    assert {refs[1].sha256, refs[2].sha256} <= held
    assert json.loads(json.dumps(loaded_models()))  # plain data: fit for client.run on every worker
