"""Oracle: bioimageio.core's own prediction on a tile equals segpipe's, for each preprocessing step (1e-4).

bioimageio.core runs in its own environment (.venv-oracle, scripts/oracle_env.sh: its pins clash with segpipe's),
called once for all packages; scripts/test.sh makes it, so under CI a missing oracle is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from segpipe.models import resolve_model
from segpipe.models.cache import model_payload
from segpipe.models.check import package_prediction
from segpipe.models.package import read_package
from tests.bioimageio_packages import build_package

pytest.importorskip("bioimageio.spec")

ROOT = Path(__file__).resolve().parents[3]
ORACLE = ROOT / ".venv-oracle" / "bin" / "python"
SCRIPT = ROOT / "tests" / "oracle" / "bioimageio_core_predict.py"


def _preprocessing(*steps: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def edit(rdf: dict[str, Any]) -> None:
        rdf["inputs"][0]["preprocessing"] = list(steps)

    return edit


SPATIAL = {"axes": ["y", "x"]}
CASES = {
    "zero_mean_unit_variance measured": _preprocessing({"id": "zero_mean_unit_variance", "kwargs": SPATIAL}),
    "fixed_zero_mean_unit_variance": _preprocessing(
        {"id": "fixed_zero_mean_unit_variance", "kwargs": {"mean": 95.0, "std": 18.0}}
    ),
    "scale_linear": _preprocessing({"id": "scale_linear", "kwargs": {"gain": 0.02, "offset": -2.0}}),
    "scale_range": _preprocessing(
        {"id": "scale_range", "kwargs": {**SPATIAL, "min_percentile": 1.0, "max_percentile": 99.0}}
    ),
    "scale_linear + clip": _preprocessing(
        {"id": "scale_linear", "kwargs": {"gain": 0.02, "offset": -2.0}},
        {"id": "clip", "kwargs": {"min": -0.5, "max": 0.5}},
    ),
    "scale_linear + binarize": _preprocessing(  # bioimageio.core binarizes to bool: cast back for the network
        {"id": "scale_linear", "kwargs": {"gain": 0.02, "offset": -2.0}},
        {"id": "binarize", "kwargs": {"threshold": 0.1}},
        {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
    ),
}


@pytest.fixture(scope="module")
def predictions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per case: segpipe's and bioimageio.core's outputs on the same 96^2 tile."""
    if not ORACLE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{ORACLE} missing: scripts/test.sh makes it with scripts/oracle_env.sh")
        pytest.skip(f"{ORACLE} missing: run scripts/oracle_env.sh")
    root = tmp_path_factory.mktemp("oracle")
    tile = np.random.default_rng(7).normal(100, 20, (1, 1, 96, 96)).astype(np.float32)
    np.save(root / "tile.npy", tile)
    jobs, ours = [], {}
    for k, (case, edit) in enumerate(CASES.items()):
        rdf = build_package(root / f"package{k}", edit=edit)
        ref = resolve_model(rdf)
        payload = model_payload(ref)
        ours[case] = package_prediction(ref, read_package(payload, ref.uri), payload, tile)
        jobs.append({"rdf": str(rdf), "input": str(root / "tile.npy"), "output": str(root / f"core{k}.npy")})
    (root / "jobs.json").write_text(json.dumps(jobs))
    done = subprocess.run(
        [str(ORACLE), str(SCRIPT), str(root / "jobs.json")], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {case: (ours[case], np.load(job["output"])) for case, job in zip(CASES, jobs, strict=True)}


@pytest.mark.parametrize("case", list(CASES))
def test_segpipe_equals_bioimageio_core_on_a_tile(
    predictions: dict[str, tuple[np.ndarray, np.ndarray]], case: str
) -> None:
    ours, core = predictions[case]
    assert ours.shape == core.shape == (1, 2, 96, 96)
    np.testing.assert_allclose(ours, core, rtol=0, atol=1e-4)
