"""The nightly flow night after night, on a local folder and on an S3 bucket (moto): it processes what is new,
changed or left unfinished, skips what is unchanged, says why for each image, and takes up again the next night an
image that failed during compute (a corrupt tile) or could not be planned (a cut-off upload)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr

from flows.nightly import nightly
from segpipe.storage import location
from segpipe.synthetic import write_sample

pytestmark = pytest.mark.integration

SETTINGS = {"tiling": {"tile": 128}, "inference": {"batch_size": 4, "torch_threads": 1}}
TRUTHS = "{dir}/{stem}_truth.tif"


@pytest.fixture(scope="module")
def cluster(s3_server: str) -> Iterator[str]:
    """Two single-threaded worker processes, started once the S3 test server's environment is set (workers
    inherit it)."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
        yield local.scheduler_address


def _night(inputs: str, out: str, cluster: str) -> tuple[str, dict[str, Any]]:
    """Run one night; its final state's name and its report."""
    state = nightly(inputs, out, truth_pattern=TRUTHS, cluster=cluster, chunk=128, settings=SETTINGS, return_state=True)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, dict), report
    written = json.loads(location(out).child(f"nightly-{report['nightly']['date']}.json").read_bytes())
    assert written["nightly"] == report["nightly"]
    return state.type.value, report


def _why(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Per image: (reason, status)."""
    return {entry["name"]: (entry["reason"], entry["status"]) for entry in report["nightly"]["images"]}


def _mask(out: Path, name: str) -> np.ndarray:
    return np.asarray(zarr.open_array(str(out / name / f"{name}.ome.zarr" / "labels" / "mask" / "0"), mode="r")[:])


def _corrupt_last_tile(path: Path) -> None:
    """Overwrite the middle of the last tile's compressed bytes: the header and the first tile (which planning
    probes) stay valid, so the image fails during ingest on a worker, not while planning."""
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[-1], tif.pages[0].databytecounts[-1]
    with path.open("r+b") as handle:
        handle.seek(offset + count // 4)
        handle.write(bytes(range(256)) * (count // 512))


def _cut_off(path: Path) -> None:
    """A partial upload: the file loses its last bytes."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 4096])


def test_nights_on_a_folder_process_only_new_changed_and_unfinished_images(tmp_path: Path, cluster: str) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    write_sample(inputs, 256, seed=1, name="a")  # a has a truth, b has none (nightly data usually has none)
    write_sample(inputs, 256, seed=2, name="b")
    (inputs / "b_truth.tif").unlink()

    state, first = _night(str(inputs), str(out), cluster)
    assert state == "COMPLETED"
    assert _why(first) == {"a": ("new", "processed"), "b": ("new", "processed")}
    assert first["images"][0]["mean_dice"] > 0.8
    assert "mean_dice" not in first["images"][1]
    masks = {name: _mask(out, name) for name in ("a", "b")}

    state, second = _night(str(inputs), str(out), cluster)  # nothing new: a success that computes nothing
    assert state == "COMPLETED"
    assert _why(second) == {"a": ("unchanged", "skipped"), "b": ("unchanged", "skipped")}
    assert second["batch"] is None
    assert second["images"] == []
    assert second["mlflow_run_id"] == ""

    write_sample(inputs, 256, seed=3, name="c")
    (inputs / "c_truth.tif").unlink()
    write_sample(inputs, 256, seed=4, name="b")  # b's content replaced
    (inputs / "b_truth.tif").unlink()
    state, third = _night(str(inputs), str(out), cluster)
    assert state == "COMPLETED"
    assert _why(third) == {"a": ("unchanged", "skipped"), "b": ("changed", "processed"), "c": ("new", "processed")}
    assert [entry["name"] for entry in third["images"]] == ["b", "c"]  # only these went to the batch
    assert not np.array_equal(_mask(out, "b"), masks["b"]), "the changed image b was not segmented again"
    assert np.array_equal(_mask(out, "a"), masks["a"]), "the unchanged image a was rewritten"

    write_sample(inputs, 512, seed=5, name="d")
    write_sample(inputs, 256, seed=6, name="e")
    _corrupt_last_tile(inputs / "d.tif")  # fails during compute: the others finish
    _cut_off(inputs / "e.tif")  # refused while planning: the others are planned without it
    state, fourth = _night(str(inputs), str(out), cluster)
    why = _why(fourth)
    assert state == "FAILED", "a failed or rejected image must make the night visible as failed"
    assert why["d"] == ("new", "failed")
    assert why["e"] == ("new", "rejected")
    assert {why[n] for n in "abc"} == {("unchanged", "skipped")}
    errors = {entry["name"]: entry["error"] for entry in fourth["nightly"]["images"]}
    assert "d.tif" in errors["d"]
    assert "truncated" in errors["e"]
    assert not (out / "d" / "done.json").exists(), "the failed image d was marked done"
    assert (out / "d").exists(), "the failed image d left no output folder"

    write_sample(inputs, 512, seed=5, name="d")  # both fixed
    write_sample(inputs, 256, seed=6, name="e")
    state, fifth = _night(str(inputs), str(out), cluster)
    assert state == "COMPLETED"
    assert _why(fifth) == {
        "a": ("unchanged", "skipped"),
        "b": ("unchanged", "skipped"),
        "c": ("unchanged", "skipped"),
        "d": ("retry", "processed"),
        "e": ("new", "processed"),
    }
    assert fifth["images"][0]["dice"][1] > 0.8  # d, resumed after last night's failure, is right
    assert fifth["nightly"]["counts"] == {
        **{"new": 1, "changed": 0, "unchanged": 3, "retry": 1},
        **{"processed": 2, "skipped": 3, "failed": 0, "rejected": 0},
    }


def test_nights_on_s3_find_new_objects_and_replaced_ones(tmp_path: Path, s3_bucket: str, cluster: str) -> None:
    from segpipe.storage.options import filesystem

    fs = filesystem("s3")
    bucket = s3_bucket.removeprefix("s3://")
    inputs, out = f"{s3_bucket}/in/*.tif", f"{s3_bucket}/out"
    state, empty = _night(inputs, out, cluster)  # nothing uploaded yet: a success with nothing to do
    assert state == "COMPLETED"
    assert empty["nightly"]["images"] == []
    assert empty["batch"] is None

    for seed, name in ((1, "a"), (2, "b")):
        image, truth = write_sample(tmp_path / "local", 256, seed=seed, name=name)
        fs.put_file(str(image), f"{bucket}/in/{name}.tif")
        fs.put_file(str(truth), f"{bucket}/in/{name}_truth.tif")  # matched by in/*.tif too: paired, not an input
    state, first = _night(inputs, out, cluster)
    assert state == "COMPLETED"
    assert _why(first) == {"a": ("new", "processed"), "b": ("new", "processed")}
    assert all(entry["truth"].endswith("_truth.tif") and entry["mean_dice"] > 0.8 for entry in first["images"])

    state, second = _night(inputs, out, cluster)
    assert state == "COMPLETED"
    assert _why(second) == {"a": ("unchanged", "skipped"), "b": ("unchanged", "skipped")}

    image, _ = write_sample(tmp_path / "other", 256, seed=9, name="a")
    fs.put_file(str(image), f"{bucket}/in/a.tif")  # same key, new content: a new ETag
    state, third = _night(inputs, out, cluster)
    assert state == "COMPLETED"
    assert _why(third) == {"a": ("changed", "processed"), "b": ("unchanged", "skipped")}
    assert third["nightly"]["images"][0]["detail"] == "input content or settings changed"
