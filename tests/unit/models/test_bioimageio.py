"""bioimage.io packages: validated, mapped onto a card, checked on their own test, run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from segpipe.cli import main
from segpipe.errors import ModelError
from segpipe.models import resolve_model
from segpipe.models.check import check_package
from segpipe.models.package import pack_folder
from tests.bioimageio_packages import HALO, build_package, zip_package

pytest.importorskip("bioimageio.spec")


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_package(tmp_path_factory.mktemp("bioimageio") / "tiny")


def test_card_comes_from_the_package(package: Path) -> None:
    card = resolve_model(package).card
    assert card.in_channels == 1
    assert card.class_names == ("background", "nucleus")
    assert card.halo == HALO
    assert card.size_divisor == 16
    assert [step.id for step in card.input_steps] == ["zero_mean_unit_variance"]
    assert card.architecture["weights"] == "torchscript"


def test_folder_packs_to_the_same_bytes_every_time(package: Path) -> None:
    assert pack_folder(package) == pack_folder(package)


def test_model_check_passes_on_the_packages_own_test(package: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["model", "check", str(package)])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.startswith(f"PASS {package}: max abs difference ")


def test_zip_package_passes_its_test_within_1e4(package: Path, tmp_path: Path) -> None:
    ref = resolve_model(zip_package(package, tmp_path / "tiny.zip"))
    result = check_package(ref)
    assert result.passed
    assert result.max_abs_diff < 1e-4


def test_wrong_expected_output_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rdf = build_package(tmp_path / "off", expected_scale=1.5)
    rc = main(["model", "check", str(rdf), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 3
    assert report["passed"] is False
    assert report["max_abs_diff"] > 1e-2


def test_state_dict_weights_need_consent_for_the_packages_code(tmp_path: Path) -> None:
    rdf = build_package(tmp_path / "sd", weights="state_dict")
    with pytest.raises(ModelError, match="pass --trust-model-code"):
        resolve_model(rdf)


def test_state_dict_weights_run_with_consent(tmp_path: Path) -> None:
    rdf = build_package(tmp_path / "sd", weights="state_dict")
    ref = resolve_model(rdf, trust_code=True)
    assert check_package(ref, trust_code=True).passed


def test_run_segments_an_image_with_a_package_zip(package: Path, tmp_path: Path) -> None:
    image = np.random.default_rng(1).normal(100, 20, (96, 80)).astype(np.float32)
    tifffile.imwrite(tmp_path / "cells.tif", image)
    archive = zip_package(package, tmp_path / "tiny.zip")
    argv = ["run", str(tmp_path / "cells.tif"), "--model", str(archive), "--out", str(tmp_path / "out")]
    rc = main([*argv, "--chunk", "64", "--tile", "32", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"])
    assert rc == 0
    mask = zarr.open_array(str(tmp_path / "out" / "cells" / "cells.ome.zarr" / "labels" / "mask" / "0"), mode="r")
    assert mask.shape == (96, 80)


def test_register_checks_the_package_and_it_resolves_back(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    rc = main(["model", "register", str(package), "--name", "tiny", "--tracking-uri", uri])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out[0].startswith("PASS ")
    assert out[1] == "registered tiny version 1 (models:/tiny/1)"
    registered = resolve_model("models:/tiny/1", tracking_uri=uri)
    assert (registered.format, registered.sha256) == ("bioimageio", resolve_model(package).sha256)


def test_register_refuses_a_package_failing_its_test(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rdf = build_package(tmp_path / "off", expected_scale=1.5)
    rc = main(["model", "register", str(rdf), "--name", "off", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 3
    assert err == f"segpipe: error: {rdf}: fails its own test; not registered"
    assert not (tmp_path / "m.db").exists()
