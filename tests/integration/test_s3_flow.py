"""The whole command on object storage: inputs, truths and outputs in an S3 bucket (moto on loopback), run as a
user runs it; masks and metrics equal a local run, and a run killed mid-way resumes on S3 to the same bytes."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from segpipe.synthetic import write_sample
from tests.outputs import file_tree, kill_seed, start_segpipe_run

pytestmark = pytest.mark.integration

RUN_ARGS = ["--chunk", "128", "--tile", "128", "--workers", "2", "--batch-size", "4", "--json"]


def _s3():
    from segpipe.storage.options import filesystem

    return filesystem("s3")


def _s3_tree(prefix: str) -> dict[str, bytes]:
    fs = _s3()
    fs.invalidate_cache()
    root = prefix.removeprefix("s3://").rstrip("/")
    return {key[len(root) + 1 :]: fs.cat_file(key) for key in sorted(fs.find(root))}


def _run(args: list[str], env: dict[str, str]) -> dict:
    process = start_segpipe_run(args, env)
    stdout, stderr = process.communicate(timeout=400)
    assert process.returncode == 0, stderr[-3000:]
    return json.loads(stdout)


@pytest.fixture
def scene(tmp_path: Path, s3_bucket: str) -> tuple[str, str, str, str]:
    """A 768 x 768 sample on local disk and the same bytes in the bucket: (image, truth, s3 image, s3 truth)."""
    image, truth = write_sample(tmp_path / "in", 768, seed=11, name="scene")
    fs = _s3()
    bucket = s3_bucket.removeprefix("s3://")
    for path in (image, truth):
        fs.put_file(str(path), f"{bucket}/in/{Path(path).name}")
    return str(image), str(truth), f"{s3_bucket}/in/scene.tif", f"{s3_bucket}/in/scene_truth.tif"


def test_s3_run_equals_local_run_and_resumes_after_kill(
    tmp_path: Path, scene: tuple[str, str, str, str], s3_bucket: str, prefect_server: str
) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_server}
    image, truth, s3_image, s3_truth = scene
    local = _run([image, "--truth", truth, "--out", str(tmp_path / "local"), *_tracking(tmp_path, "l"), *RUN_ARGS], env)
    remote = _run(
        [s3_image, "--truth", s3_truth, "--out", f"{s3_bucket}/out", *_tracking(tmp_path, "r"), *RUN_ARGS], env
    )

    local_labels = file_tree(tmp_path / "local" / "scene" / "scene.ome.zarr" / "labels")
    assert _s3_tree(f"{s3_bucket}/out/scene/scene.ome.zarr/labels") == local_labels  # byte-identical chunks
    assert remote["images"][0]["iou"] == local["images"][0]["iou"]
    assert remote["images"][0]["mask"] == f"{s3_bucket}/out/scene/scene.ome.zarr/labels/mask/0"
    written = _s3_tree(f"{s3_bucket}/out")
    assert {"scene/done.json", "scene/metrics.json", "scene/preview.png", "batch.json"} <= set(written)
    assert "segpipe-test" not in json.dumps(remote)  # the dummy secret never reaches a report

    out = f"{s3_bucket}/killed"
    args = [s3_image, "--truth", s3_truth, "--out", out, *_tracking(tmp_path, "k"), *RUN_ARGS]
    seed = kill_seed()
    after = random.Random(seed).randint(3, 25)
    process = start_segpipe_run(args, env)
    deadline = time.monotonic() + 300
    while _marked(f"{out}/scene/scene.ome.zarr") < after and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.poll() is None, f"run ended before {after} chunks were marked (seed {seed})"
    os.killpg(process.pid, signal.SIGKILL)  # CLI, scheduler, nannies and workers at once
    process.wait()
    assert "scene/done.json" not in _s3_tree(out), f"committed after a kill at {after} chunks (seed {seed})"
    resumed = _run(args, env)
    replay = f"killed after {after} infer chunks (seed {seed})"
    assert _s3_tree(f"{out}/scene/scene.ome.zarr/labels") == local_labels, replay
    assert resumed["images"][0]["chunks_computed"] <= resumed["images"][0]["chunks"] - after, replay
    assert resumed["images"][0]["iou"] == local["images"][0]["iou"]


def _marked(store: str) -> int:
    """Inference chunks marked done in the store's ledgers."""
    fs = _s3()
    fs.invalidate_cache()
    ledgers = store.removeprefix("s3://") + "/.segpipe"
    return (
        sum(len(fs.ls(d)) for d in fs.ls(ledgers) if d.rsplit("/", 1)[-1].startswith("infer-"))
        if fs.exists(ledgers)
        else 0
    )


def _tracking(tmp_path: Path, name: str) -> list[str]:
    return ["--tracking-uri", f"sqlite:///{tmp_path / name}.db"]
