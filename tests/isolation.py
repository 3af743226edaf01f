"""A pytest plugin (loaded by ``-p tests.isolation`` in pyproject): every test session gets its own SEGPIPE_HOME
and no MLFLOW_TRACKING_URI, so no test writes to the user's MLflow store or into the repository."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_segpipe_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Point SEGPIPE_HOME at a temporary folder for the whole session; restore the environment after."""
    saved = {key: os.environ.get(key) for key in ("SEGPIPE_HOME", "MLFLOW_TRACKING_URI")}
    home = str(tmp_path_factory.mktemp("segpipe-home"))
    os.environ["SEGPIPE_HOME"] = home
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
