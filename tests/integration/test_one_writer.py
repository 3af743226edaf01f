"""One writer per output (issue 18): concurrent ``segpipe run`` processes on one ``--out``, started for real.

For every set of racers the store ends up holding exactly one fingerprint's mask, equal to a solo run of it, and
every run of another fingerprint exits non-zero with one ``segpipe: error:`` line; runs of the same fingerprint
all exit 0. Cases: two and three processes on local disk and on S3 (moto), together and staggered; a holder
killed with SIGKILL and its lease taken over; a store without conditional writes; an S3 endpoint that answers
503 SlowDown and drops connections on purpose.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from segpipe.stages.fingerprints import mask_fingerprint
from segpipe.storage import open_array
from segpipe.synthetic import write_sample
from tests.flaky_proxy import FlakyProxy
from tests.outputs import markers_done, start_segpipe_run

pytestmark = pytest.mark.integration

RUN_ARGS = ["--chunk", "256", "--tile", "256", "--workers", "2"]
MODELS = {"unet": "builtin", "otsu": "baseline:otsu"}


@dataclass(frozen=True)
class Solo:
    """What a run of one model alone leaves: its store's fingerprint and its mask."""

    fingerprint: str
    mask: np.ndarray


@dataclass(frozen=True)
class Finished:
    """One racer's model, exit code and error lines."""

    model: str
    returncode: int
    errors: tuple[str, ...]
    stderr: str


def _args(image: str, out: str, model: str, tmp: Path, tag: str, *extra: str) -> list[str]:
    tracking = ["--tracking-uri", f"sqlite:///{tmp / tag}.db"]
    return [image, "--model", MODELS[model], "--out", out, *RUN_ARGS, *tracking, *extra]


def _finish(model: str, process: subprocess.Popen[str]) -> Finished:
    _, stderr = process.communicate(timeout=400)
    errors = tuple(line for line in stderr.splitlines() if line.startswith("segpipe: error:"))
    return Finished(model, process.returncode, errors, stderr)


def _store(out: str) -> str:
    return f"{out}/scene/scene.ome.zarr"


def _mask(out: str) -> np.ndarray:
    return np.asarray(open_array(f"{_store(out)}/labels/mask/0")[:])


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> str:
    image, _ = write_sample(tmp_path_factory.mktemp("in"), 1024, seed=5, name="scene")
    return str(image)


@pytest.fixture(scope="module")
def solos(scene: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Solo]:
    """Each model run alone, to compare the racers' store with."""
    tmp = tmp_path_factory.mktemp("solo")
    env = dict(os.environ)
    found = {}
    for model in MODELS:
        out = str(tmp / model)
        done = _finish(model, start_segpipe_run(_args(scene, out, model, tmp, model), env))
        assert done.returncode == 0, done.stderr[-3000:]
        fingerprint = mask_fingerprint(_store(out))
        assert fingerprint is not None
        found[model] = Solo(fingerprint, _mask(out))
    return found


def _race(scene: str, out: str, models: list[str], tmp: Path, stagger: bool, env: dict[str, str]) -> list[Finished]:
    """Start one run per model on ``out``: together, or each after the first holds the output's lease."""
    processes = []
    for i, model in enumerate(models):
        processes.append((model, start_segpipe_run(_args(scene, out, model, tmp, f"race{i}"), env)))
        if stagger and i == 0:
            _wait_for_lease(out, processes[0][1])
    return [_finish(model, process) for model, process in processes]


def _wait_for_lease(out: str, first: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not _lease_exists(out) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, "the first run ended before it held its lease"


def _lease_exists(out: str) -> bool:
    from segpipe.storage import location

    lease = location(out).child("scene", ".lease")
    try:
        return bool(lease.listdir())
    except FileNotFoundError:
        return False


def assert_one_writer(out: str, finished: list[Finished], solos: dict[str, Solo]) -> None:
    """The store holds one fingerprint's mask, byte for byte its solo run's; others were refused in one line."""
    committed = mask_fingerprint(_store(out))
    winners = [model for model, solo in solos.items() if solo.fingerprint == committed]
    assert len(winners) == 1, f"the store is committed under {committed}, no racer's fingerprint"
    np.testing.assert_array_equal(_mask(out), solos[winners[0]].mask)
    for run in finished:
        if run.model == winners[0]:
            assert run.returncode == 0, run.stderr[-3000:]
            continue
        assert run.returncode != 0, f"{run.model} exited 0 but the store holds {winners[0]}'s mask"
        assert len(run.errors) == 1, run.stderr[-3000:]
        assert "Traceback" not in run.stderr, run.stderr[-3000:]


@pytest.mark.parametrize("stagger", [False, True], ids=["together", "staggered"])
def test_two_models_on_one_local_output(scene: str, solos: dict[str, Solo], tmp_path: Path, stagger: bool) -> None:
    out = str(tmp_path / "out")
    finished = _race(scene, out, ["unet", "otsu"], tmp_path, stagger, dict(os.environ))
    assert_one_writer(out, finished, solos)


def test_three_runs_one_output_two_of_one_model(scene: str, solos: dict[str, Solo], tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    finished = _race(scene, out, ["unet", "otsu", "unet"], tmp_path, True, dict(os.environ))
    assert_one_writer(out, finished, solos)
    assert [run.returncode for run in finished if run.model == "unet"] == [0, 0]


def test_two_runs_of_one_model_both_finish(scene: str, solos: dict[str, Solo], tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    finished = _race(scene, out, ["otsu", "otsu"], tmp_path, False, dict(os.environ))
    assert [run.returncode for run in finished] == [0, 0]
    assert_one_writer(out, finished, solos)


@pytest.mark.parametrize("models", [["unet", "otsu"], ["otsu", "otsu", "unet"]], ids=["two", "three"])
def test_racers_on_one_s3_output(
    scene: str, solos: dict[str, Solo], tmp_path: Path, s3_bucket: str, atomic_s3_puts: None, models: list[str]
) -> None:
    out = f"{s3_bucket}/out"
    finished = _race(scene, out, models, tmp_path, False, dict(os.environ))
    assert_one_writer(out, finished, solos)


def test_a_killed_holders_output_is_taken_over(scene: str, solos: dict[str, Solo], tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    holder = start_segpipe_run(_args(scene, out, "unet", tmp_path, "holder"), dict(os.environ))
    deadline = time.monotonic() + 240
    while markers_done(tmp_path / "out" / "scene", "infer") < 3 and holder.poll() is None:
        assert time.monotonic() < deadline, "the holder never reached its third chunk"
        time.sleep(0.02)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    taker = _finish("otsu", start_segpipe_run(_args(scene, out, "otsu", tmp_path, "taker"), dict(os.environ)))
    assert_one_writer(out, [taker], solos)
    assert mask_fingerprint(_store(out)) == solos["otsu"].fingerprint


def test_a_store_without_conditional_writes_needs_no_lease(scene: str, solos: dict[str, Solo], tmp_path: Path) -> None:
    out = "memory://segpipe-one-writer/out"
    refused = _finish("otsu", start_segpipe_run(_args(scene, out, "otsu", tmp_path, "m1"), dict(os.environ)))
    assert refused.returncode == 4, refused.stderr[-3000:]
    assert len(refused.errors) == 1, refused.stderr[-3000:]
    assert "--no-lease" in refused.errors[0]
    allowed = _finish(
        "otsu", start_segpipe_run(_args(scene, out, "otsu", tmp_path, "m2", "--no-lease"), dict(os.environ))
    )
    assert allowed.returncode == 0, allowed.stderr[-3000:]


def test_a_flaky_s3_endpoint_still_gives_the_solo_mask(
    scene: str, solos: dict[str, Solo], tmp_path: Path, s3_bucket: str, s3_server: str
) -> None:
    secret = "flaky-test-secret-7c1e"
    out = f"{s3_bucket}/flaky"
    proxy = FlakyProxy(s3_server, seed=0)
    with proxy as endpoint:
        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint, "AWS_SECRET_ACCESS_KEY": secret}
        run = _finish("otsu", start_segpipe_run(_args(scene, out, "otsu", tmp_path, "flaky"), env))
    assert run.returncode == 0, run.stderr[-3000:]
    assert proxy.counts["slow_down"] > 0, proxy.counts
    assert proxy.counts["dropped"] > 0, proxy.counts
    np.testing.assert_array_equal(_mask(out), solos["otsu"].mask)
    assert secret not in run.stderr
    db = (tmp_path / "flaky.db").read_bytes()
    assert secret.encode() not in db
