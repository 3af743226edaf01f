"""The model-source registry: each spec goes to the source registered for its scheme, and a new scheme plugs in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from segpipe.errors import ModelError
from segpipe.models import (
    ModelRef,
    ModelSource,
    model_payload,
    register_source,
    registered_sources,
    resolve_model,
    source_for,
    uninstall_model,
    unregister_source,
)
from segpipe.models.sources import Found, Request, scheme_of
from segpipe.models.sources.files import find_file

from ..helpers import TinyNet, save_torchscript, tiny_card


@pytest.mark.parametrize(
    ("spec", "scheme", "source"),
    [
        ("models:/nuclei@champion", "models", "MLflow model registry"),
        ("models:/nuclei/3", "models", "MLflow model registry"),
        ("s3://bucket/model.pt", "s3", "file"),
        ("file:///tmp/model.pt", "file", "file"),
        ("/tmp/model.pt", "", "file"),
        ("relative/model.onnx", "", "file"),
        ("builtin", "name", "named"),
        ("baseline:otsu", "name", "named"),
    ],
)
def test_each_spec_goes_to_the_source_of_its_scheme(spec: str, scheme: str, source: str) -> None:
    assert scheme_of(spec) == scheme
    assert source_for(spec).name == source


def test_the_builtin_sources_serve_paths_urls_names_and_models_uris() -> None:
    assert sorted(registered_sources()) == ["", "models", "name", "url"]


@pytest.fixture
def memo_source(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A ``memo://KEY`` source over files in tmp_path, registered for the test only."""
    files: dict[str, Path] = {}

    def find(uri: str, request: Request) -> Found:
        return replace(find_file(str(files[uri.removeprefix("memo://")]), request), uri=uri)

    def read(ref: ModelRef) -> bytes:
        return files[ref.uri.removeprefix("memo://")].read_bytes()

    register_source(ModelSource("memo", ("memo",), find, read))
    yield files
    unregister_source("memo")


def test_a_registered_source_resolves_and_rereads_its_models(memo_source: dict[str, Path], tmp_path: Path) -> None:
    torch.manual_seed(5)
    memo_source["tiny"] = save_torchscript(TinyNet(), tmp_path / "tiny.pt", tiny_card(name="memo"))
    ref = resolve_model("memo://tiny")
    uninstall_model(ref)
    assert ref.uri == "memo://tiny"
    assert ref.card.name == "memo"
    assert model_payload(ref) == memo_source["tiny"].read_bytes()


def test_an_unregistered_source_is_gone(memo_source: dict[str, Path]) -> None:
    unregister_source("memo")
    assert "memo" not in registered_sources()
    assert source_for("memo://tiny").name == "file"  # a URL without its own source goes to the storage layer


def test_a_scheme_without_any_source_is_one_line() -> None:
    file_source = source_for("/tmp/model.pt")
    unregister_source(file_source.name)
    try:
        with pytest.raises(ModelError, match="no model source for the scheme 's3'"):
            source_for("s3://bucket/model.pt")
    finally:
        register_source(file_source)
