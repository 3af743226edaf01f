"""Crash safety: kill -9 and resume, a worker killed mid-run, a tracking outage, stale chunks never reused."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from flows.segment_batch import segment_batch
from segpipe.errors import SegpipeWarning, TrackingError
from segpipe.stages.infer import infer_image
from segpipe.stages.ingest import ingest_image
from segpipe.stages.plan import plan_batch
from segpipe.stages.settings import RunSettings
from segpipe.synthetic import write_sample
from tests.outputs import file_tree, kill_seed, markers_done, start_segpipe_run

pytestmark = pytest.mark.integration

RUN_ARGS = ["--chunk", "128", "--tile", "128", "--workers", "2", "--batch-size", "4"]


def _committed(image_dir: Path) -> bool:
    """The image's done.json exists, or its store carries a commit (its infer_key)."""
    from segpipe.stages.fingerprints import mask_fingerprint

    store = image_dir / f"{image_dir.name}.ome.zarr"
    return (image_dir / "done.json").exists() or mask_fingerprint(str(store)) is not None


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    image, truth = write_sample(tmp_path_factory.mktemp("sample"), 1024, seed=7, name="scene")
    return str(image), str(truth)


@pytest.mark.parametrize("prefect", ["auto", "off"])  # as the flow (an API is configured), and in process
def test_kill_dash_nine_then_resume_is_byte_identical(
    tmp_path: Path, sample: tuple[str, str], prefect_server: str, prefect: str
) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    image, truth = sample
    common = [image, "--truth", truth, *RUN_ARGS, "--json", "--prefect", prefect]
    reference = tmp_path / "reference"
    done = start_segpipe_run([*common, "--out", str(reference), "--tracking-uri", f"sqlite:///{tmp_path}/ref.db"], env)
    assert done.wait(timeout=300) == 0, done.stderr.read()
    expected = file_tree(reference / "scene" / "scene.ome.zarr" / "labels")

    seed = kill_seed()
    rng = random.Random(seed)
    kill_points = [("ingest", rng.randint(1, 30)), ("infer", rng.randint(1, 20)), ("infer", rng.randint(21, 60))]
    for number, (stage, after) in enumerate(kill_points):
        out = tmp_path / f"killed{number}"
        args = [*common, "--out", str(out), "--tracking-uri", f"sqlite:///{tmp_path}/k{number}.db"]
        process = start_segpipe_run(args, env)
        deadline = time.monotonic() + 240
        while markers_done(out / "scene", stage) < after and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, f"run ended before kill point {stage}:{after} (seed {seed})"
        os.killpg(process.pid, signal.SIGKILL)  # the whole tree: CLI, scheduler, nannies, workers
        process.wait()
        assert not _committed(out / "scene"), f"committed after a kill at {stage}:{after} (seed {seed})"

        resumed = start_segpipe_run(args, env)
        stdout, stderr = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, f"{stage}:{after}, seed {seed}: {stderr[-3000:]}"
        assert file_tree(out / "scene" / "scene.ome.zarr" / "labels") == expected, f"{stage}:{after}, seed {seed}"
        rows = sorted(p.name for p in (out / "results").rglob("*.parquet"))
        assert len(rows) == 1, f"results rows of unfinished runs after a kill at {stage}:{after} (seed {seed}): {rows}"
        if stage == "infer":
            import json

            entry = json.loads(stdout)["images"][0]
            # only what was left
            assert entry["chunks_computed"] <= entry["chunks"] - after, f"{stage}:{after}, seed {seed}"


def test_worker_killed_mid_run_gives_the_same_mask(tmp_path: Path, sample: tuple[str, str]) -> None:
    from distributed import Client, LocalCluster

    image, truth = sample
    settings = {"tiling": {"chunk": 128, "tile": 128}, "inference": {"batch_size": 4}}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        reference = segment_batch(
            [image], [truth], {**settings, "out": str(tmp_path / "ref")}, cluster=cluster.scheduler_address
        ).to_json()
        with Client(cluster.scheduler_address) as client:
            pids = list(client.run(os.getpid).values())
        out = tmp_path / "victim"
        result: dict = {}
        runner = threading.Thread(
            target=lambda: result.update(
                segment_batch(
                    [image], [truth], {**settings, "out": str(out)}, cluster=cluster.scheduler_address
                ).to_json()
            )
        )
        runner.start()
        while markers_done(out / "scene", "infer") < 8 and runner.is_alive():
            time.sleep(0.01)
        os.kill(pids[0], signal.SIGKILL)
        runner.join(timeout=300)
    assert result, "flow did not finish after a worker was killed"
    assert file_tree(out / "scene" / "scene.ome.zarr" / "labels") == file_tree(
        tmp_path / "ref" / "scene" / "scene.ome.zarr" / "labels"
    )
    assert result["images"][0]["iou"] == reference["images"][0]["iou"]


def test_tracking_outage_keeps_masks_and_resume_only_logs(
    tmp_path: Path, sample: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    image, truth = sample
    settings = {"out": str(tmp_path / "out"), "tiling": {"chunk": 256}}
    with pytest.raises(TrackingError, match="MLflow at http://127.0.0.1:9"):
        segment_batch([image], [truth], settings, workers=2, tracking_uri="http://127.0.0.1:9")
    mask = tmp_path / "out" / "scene" / "scene.ome.zarr" / "labels"
    assert mask.is_dir(), "no mask was written during the tracking outage"
    assert (tmp_path / "out" / "scene" / "done.json").exists(), "the image was not marked done"
    written = file_tree(mask)

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report = segment_batch([image], [truth], settings, workers=2, tracking_uri=tracking_uri).to_json()
    assert report["images"][0]["skipped"] is True
    assert report["batch"]["images_skipped"] == 1
    assert file_tree(mask) == written
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri).get_run(report["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["mean_dice"] == pytest.approx(report["batch"]["mean_dice"])


def test_changed_setting_never_reuses_chunks(tmp_path: Path, sample: tuple[str, str]) -> None:
    """In-process, on the threaded scheduler: half the chunks done under one halo, then a new halo redoes all."""
    image, _ = sample
    settings = RunSettings(out=str(tmp_path / "out"))
    from dataclasses import replace

    from segpipe.config import TilingConfig

    first = plan_batch([image], None, replace(settings, tiling=TilingConfig(chunk=256, halo=32)))
    job = first.jobs[0]
    ingested = ingest_image(job, first)
    from segpipe.io.ledger import ChunkLedger
    from segpipe.storage import location
    from segpipe.tiling import chunk_grid

    ledger = ChunkLedger(location(job.store), "infer", job.infer_key)
    ledger.reset()
    for region in chunk_grid(1024, 1024, 256)[:8]:
        ledger.mark_done(region)  # as if a killed run had finished these under halo 32
    from segpipe.chunk_inference import create_mask

    create_mask(job.mask, 1024, 1024, 256, 2)
    with pytest.warns(SegpipeWarning, match="smaller than the receptive-field radius"):
        second = plan_batch([image], None, replace(settings, tiling=TilingConfig(chunk=256, halo=16)))
    assert second.jobs[0].infer_key != job.infer_key
    result = infer_image(second.jobs[0], ingested, second, settings.inference)
    assert result.chunks_computed == result.chunks == 16
