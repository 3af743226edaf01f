"""Fixtures for the cluster backends: the repository's Dask config (infra/dask/segpipe.yaml) loaded for one test,
and Dask's config directory kept out of the repository."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import pytest
import yaml

INFRA_DASK = Path(__file__).resolve().parents[3] / "infra" / "dask" / "segpipe.yaml"


@pytest.fixture
def infra_config() -> Iterator[dict[str, Any]]:
    """Dask config as the scripts see it (DASK_CONFIG=infra/dask), whatever the environment of this test run."""
    values = yaml.safe_load(INFRA_DASK.read_text())
    with dask.config.set(segpipe=values["segpipe"]):
        yield values


@pytest.fixture(autouse=True)
def dask_config_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """On first import dask-jobqueue and dask-kubernetes copy their commented default YAML into Dask's config
    directory, which is infra/dask under scripts/test.sh (DASK_CONFIG); send those copies to a temporary one."""
    monkeypatch.setattr(dask.config, "PATH", str(tmp_path_factory.getbasetemp() / "dask-config"))
