"""``segpipe model register``: each model format with its card, against a real local MLflow store (sqlite in
tmp_path); a bad model file is exit 3, an unreachable server exit 5, each in one line."""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from segpipe.cli import main
from segpipe.errors import ConfigError, ModelError, TrackingError
from segpipe.models import resolve_model
from segpipe.models.backends.builtin import BUILTIN_CARD

from .helpers import TinyNet, save_torchscript, tiny_card

pytest.importorskip("mlflow")


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh sqlite store; the command runs from an empty folder, so anything written there would show."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


def torchscript_with_json_card(folder: Path) -> Path:
    torch.manual_seed(7)
    return save_torchscript(TinyNet(), folder / "tiny.pt", tiny_card(name="tiny-ts"))


def onnx_with_yaml_card(folder: Path) -> Path:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(8)
    path = folder / "tiny.onnx"
    dynamic = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(
        TinyNet().eval(),
        (torch.zeros(1, 2, 32, 32),),
        str(path),
        dynamo=False,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": dynamic, "logits": dynamic},
        opset_version=17,
    )
    (folder / "tiny.yaml").write_text(yaml.safe_dump(tiny_card(name="tiny-onnx")))
    return path


def state_dict_with_json_card(folder: Path) -> Path:
    shutil.copy(BUILTIN_CARD, folder / "unet.json")
    return Path(shutil.copy(BUILTIN_CARD.with_suffix(".pt"), folder / "unet.pt"))


def state_dict_with_yaml_card(folder: Path) -> Path:
    (folder / "unet.yml").write_text(yaml.safe_dump(json.loads(BUILTIN_CARD.read_text())))
    return Path(shutil.copy(BUILTIN_CARD.with_suffix(".pt"), folder / "unet.pt"))


MAKERS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "torchscript-json": (torchscript_with_json_card, "torchscript"),
    "onnx-yaml": (onnx_with_yaml_card, "onnx"),
    "state_dict-json": (state_dict_with_json_card, "state_dict"),
    "state_dict-yaml": (state_dict_with_yaml_card, "state_dict"),
}


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def _one_error_line(err: str, out: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("segpipe: error: "), err
    assert out == ""
    return lines[0]


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_each_format_registers_with_its_card_and_resolves_back(
    kind: str, tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make, backend = MAKERS[kind]
    (tmp_path / "model").mkdir()
    path = make(tmp_path / "model")
    argv = ["model", "register", str(path), "--name", "nuclei", "--alias", "champion", "--tracking-uri", tracking_uri]

    rc, out, err = _run(capsys, *argv)

    assert (rc, out, err) == (0, "registered nuclei version 1 (models:/nuclei/1), alias champion\n", "")
    local = resolve_model(path)
    registered = resolve_model("models:/nuclei@champion", tracking_uri=tracking_uri)
    assert (registered.format, registered.sha256, registered.card) == (backend, local.sha256, local.card)
    assert registered.registry is not None
    assert registered.registry.version == 1
    assert list((tmp_path / "cwd").iterdir()) == []  # artifacts beside the store, never in the working directory
    assert (tmp_path / "store" / "mlartifacts").is_dir()


def test_second_version_json_and_no_alias(
    tracking_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = torchscript_with_json_card(tmp_path)
    assert (
        _run(
            capsys,
            "model",
            "register",
            str(first),
            "--name",
            "n",
            "--alias",
            "champion",
            "--tracking-uri",
            tracking_uri,
        )[0]
        == 0
    )
    (tmp_path / "v2").mkdir()
    second = state_dict_with_json_card(tmp_path / "v2")

    rc, out, _ = _run(capsys, "model", "register", str(second), "--name", "n", "--tracking-uri", tracking_uri, "--json")

    assert rc == 0
    assert json.loads(out) == {
        "name": "n",
        "version": 2,
        "uri": "models:/n/2",
        "alias": None,
        "format": "state_dict",
        "sha256": resolve_model(second).sha256,
        "tracking_uri": tracking_uri,
    }
    assert resolve_model("models:/n@champion", tracking_uri=tracking_uri).format == "torchscript"  # alias stayed
    rc, out, _ = _run(capsys, "model", "register", str(second), "--name", "n", "--tracking-uri", tracking_uri)
    assert out == "registered n version 3 (models:/n/3)\n"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"not a model\n", "not a TorchScript, torch.save or ONNX file"),
        (None, "no such model file"),
        ("state_dict without card", "needs a model card"),
    ],
)
def test_bad_model_file_is_one_line_and_exit_3(
    content: bytes | str | None,
    fragment: str,
    tracking_uri: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        shutil.copy(BUILTIN_CARD.with_suffix(".pt"), path)

    rc, out, err = _run(capsys, "model", "register", str(path), "--name", "bad", "--tracking-uri", tracking_uri)

    line = _one_error_line(err, out)
    assert rc == ModelError.exit_code == 3
    assert str(path) in line
    assert fragment in line
    assert not (tmp_path / "store").exists()  # nothing was written to the store


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_server_is_one_line_and_exit_5_without_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = torchscript_with_json_card(tmp_path)
    uri = f"http://alice:s3cret@127.0.0.1:{_free_port()}"
    started = time.monotonic()

    rc, out, err = _run(capsys, "model", "register", str(path), "--name", "n", "--tracking-uri", uri)

    line = _one_error_line(err, out)
    assert rc == TrackingError.exit_code == 5
    assert "unreachable" in line
    assert "s3cret" not in line
    assert "127.0.0.1" in line
    assert time.monotonic() - started < 30  # not MLflow's minutes of retries


def test_malformed_tracking_uri_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = torchscript_with_json_card(tmp_path)
    rc, out, err = _run(capsys, "model", "register", str(path), "--name", "n", "--tracking-uri", "nowhere")
    assert rc == ConfigError.exit_code == 2
    assert "--tracking-uri" in _one_error_line(err, out)
