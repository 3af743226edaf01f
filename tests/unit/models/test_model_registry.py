"""The MLflow model registry against a real local store (sqlite in tmp_path, artifacts in tmp_path)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segpipe.errors import ModelError
from segpipe.models import load_predictor, model_payload, resolve_model, uninstall_model
from segpipe.models.register import EXPERIMENT, RegisteredModel, register_model

from ..helpers import TinyNet, save_torchscript, tiny_card

pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh sqlite tracking store whose model experiment keeps its artifacts beside it."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_experiment(EXPERIMENT, artifact_location=(root / "artifacts").as_uri())
    return uri


@pytest.fixture(scope="module")
def registered(tracking_uri: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[RegisteredModel, Path]:
    torch.manual_seed(314)
    path = save_torchscript(TinyNet(), tmp_path_factory.mktemp("to_register") / "nuclei.pt", tiny_card(name="reg"))
    return register_model(path, "nuclei", alias="champion", tracking_uri=tracking_uri), path


def test_register_returns_the_first_version(registered: tuple[RegisteredModel, Path]) -> None:
    model, _ = registered
    assert model == RegisteredModel("nuclei", 1, "models:/nuclei/1")


def test_alias_and_version_resolve_to_the_registered_bytes(
    registered: tuple[RegisteredModel, Path], tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, path = registered
    local = resolve_model(path)
    by_alias = resolve_model("models:/nuclei@champion", tracking_uri=tracking_uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    by_version = resolve_model("models:/nuclei/1")
    assert by_alias.sha256 == local.sha256
    assert by_version.sha256 == local.sha256
    assert by_alias.format == "torchscript"
    assert by_alias.card == local.card
    assert by_alias.uri == "models:/nuclei@champion"
    assert by_version.uri == "models:/nuclei/1"
    assert by_version.registry is not None
    assert by_alias.registry is not None
    assert (by_alias.registry.name, by_alias.registry.version, by_alias.registry.alias) == ("nuclei", 1, "champion")
    assert by_alias.registry.source.endswith("/artifacts/model/nuclei.pt")
    assert by_alias.path == by_alias.registry.source
    assert by_alias.registry.pinned_uri == "models:/nuclei/1"
    assert by_alias.lineage()["model_registry_version"] == "1"


def test_alias_stays_on_its_version_when_a_new_one_is_registered(
    registered: tuple[RegisteredModel, Path], tracking_uri: str, tmp_path: Path
) -> None:
    torch.manual_seed(2718)
    newer = save_torchscript(TinyNet(), tmp_path / "nuclei.pt", tiny_card(name="reg"))
    assert register_model(newer, "nuclei", tracking_uri=tracking_uri).version == 2
    champion = resolve_model("models:/nuclei@champion", tracking_uri=tracking_uri)
    second = resolve_model("models:/nuclei/2", tracking_uri=tracking_uri)
    assert champion.registry is not None
    assert champion.registry.version == 1
    assert second.sha256 == resolve_model(newer).sha256
    assert second.sha256 != champion.sha256


def test_a_worker_without_the_bytes_downloads_the_pinned_version(
    registered: tuple[RegisteredModel, Path], tracking_uri: str
) -> None:
    ref = resolve_model("models:/nuclei@champion", tracking_uri=tracking_uri)
    uninstall_model(ref)
    payload = model_payload(ref)  # downloaded again from the version's artifacts
    assert load_predictor(ref, "cpu").card == ref.card
    assert len(payload) > 0


def test_builtin_model_can_be_registered(tracking_uri: str) -> None:
    model = register_model("builtin", "builtin-unet", alias="champion", tracking_uri=tracking_uri)
    ref = resolve_model("models:/builtin-unet@champion", tracking_uri=tracking_uri)
    assert ref.sha256 == resolve_model("builtin").sha256
    assert ref.format == "state_dict"
    assert ref.card == resolve_model("builtin").card
    assert model.version == 1


def test_rgb_model_without_card_is_registered_with_the_band_count_it_was_probed_with(
    tracking_uri: str, tmp_path: Path
) -> None:
    path = save_torchscript(TinyNet(in_channels=3, num_classes=2), tmp_path / "rgb.pt")
    register_model(path, "rgb", alias="champion", tracking_uri=tracking_uri, channels=3)
    ref = resolve_model("models:/rgb@champion", tracking_uri=tracking_uri)
    assert (ref.card.in_channels, ref.card.num_classes, ref.card.name) == (3, 2, "rgb")
    assert ref.assumptions == ("model card gives neither halo nor receptive field: halo 32",)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("models:/nuclei@nobody", "models:/nuclei@nobody: not in the model registry"),
        ("models:/absent/1", "models:/absent/1: not in the model registry"),
        ("models:/nuclei", "expected models:/NAME@ALIAS or models:/NAME/VERSION"),
    ],
)
def test_unknown_versions_are_one_line(
    registered: tuple[RegisteredModel, Path], tracking_uri: str, spec: str, fragment: str
) -> None:
    with pytest.raises(ModelError, match=fragment) as caught:
        resolve_model(spec, tracking_uri=tracking_uri)
    assert "\n" not in str(caught.value)


def test_registry_needs_a_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ModelError, match="needs a tracking URI"):
        resolve_model("models:/nuclei@champion")


def test_baseline_cannot_be_registered(tracking_uri: str) -> None:
    with pytest.raises(ModelError, match="only a model file can be registered"):
        register_model("baseline", "baseline", tracking_uri=tracking_uri)
