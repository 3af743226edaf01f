"""Smoke test of the benchmark harness (``python -m bench``) at tiny sizes: every benchmark runs and writes the
JSON schema the summary and the README rely on. Commands are answered by a fake runner that writes what
``segpipe run --json`` and ``bench.monai_infer`` would (the real ones take a minute each); the floor, the inputs,
the near-free model, the S3 upload to moto and the process-tree sampler are real. No time is asserted."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from bench.cli import BENCHMARKS, run_benchmarks
from bench.data import STREAM_TILE, tile_pool, write_pointwise_model, write_streamed_tiff
from bench.goals import table
from bench.harness import Context
from bench.procs import CommandRun, measure_command
from bench.profiles import QUICK, BatchPair
from bench.s3_vs_local import request_fit, request_kind
from segpipe.models import load_predictor, resolve_model
from segpipe.storage import create_array

TINY = replace(
    QUICK,
    name="tiny",
    floor=(64,),
    end_to_end=(64,),
    monai=(64,),
    memory=(64, 128),
    memory_reference=64,
    overhead=64,
    batch=(BatchPair(4, 32, 64, rounds=2),),
    s3=64,
    overlap=64,
    overlap_rounds=1,
    objects=64,
    objects_memory=128,
    foreground=128,
    resolution=128,
    slide_chunk=64,
    compile=("eager", "fold", "ts", "ts_fold"),  # inductor's compile alone takes 10-20 s
    compile_repeats=1,
)
RESULT_KEYS = {"benchmark", "profile", "quick", "command", "started", "machine", "ratios", "goals", "seconds"}
GOAL_KEYS = {"benchmark", "name", "measured", "goal", "op", "target", "status", "note"}
RUN_KEYS = {"command", "seconds", "returncode", "peak_tree_rss_mib", "peak_processes"}


def _done(argv: Sequence[str], returncode: int = 0, stdout: str = "", stderr: str = "") -> CommandRun:
    return CommandRun(tuple(argv), 1.5, returncode, 200 * 2**20, 3, stdout, stderr)


def _fake_monai(argv: list[str]) -> CommandRun:
    """Write an all-background mask of the image's shape, print step seconds."""
    image, mask = argv[argv.index("bench.monai_infer") + 1 : argv.index("bench.monai_infer") + 3]
    tifffile.imwrite(mask, np.zeros(tifffile.imread(image).shape, np.uint8))
    return _done(argv, stdout=json.dumps({"seconds": {"read": 0.1, "infer": 1.0, "write": 0.1}}) + "\n")


def _fake_segpipe_run(argv: list[str]) -> CommandRun:
    """What ``segpipe run --json`` prints: a report whose masks (local inputs only) exist and are empty."""
    rest = argv[argv.index("run") + 1 :]
    images = rest[: next((i for i, arg in enumerate(rest) if arg.startswith("--")), len(rest))]
    if any("://" not in image and not Path(image).exists() for image in images):
        return _done(argv, 2, stderr=f"segpipe: error: {images[0]}: no such file or directory\n")
    out = rest[rest.index("--out") + 1]
    entries = []
    for image in images:
        name, store, mask = Path(image).stem, "", ""
        if "://" not in image and "://" not in out:
            store = str(Path(out) / name / f"{name}.ome.zarr")
            mask = f"{store}/labels/mask/0"
            shape = tifffile.imread(image).shape
            create_array(mask, shape=shape, chunks=shape, dtype=np.uint8, fill_value=1)[:] = 0
        stages = {"ingest": 0.1, "infer": 1.0, "finalize": 0.1, "evaluate": 0.1}
        entries.append({"name": name, "ome_zarr": store, "mask": mask, "seconds": stages, "mean_dice": 0.9})
    report = {"images": entries, "batch": {"seconds": 1.2}, "failures": [], "wall_seconds": 1.3}
    return _done(argv, stdout=json.dumps(report))


def _fake_probe(argv: list[str]) -> CommandRun:
    """What ``bench.startup_probe`` prints: seconds by step and per image."""
    steps = {"import torch": 1.0, "prefect server start": 2.0, "cluster start": 0.5}
    per_image = {"preview.png": 0.1, "mlflow log batch": 0.05}
    probe = {"steps": steps, "per_image": per_image, "count": 4, "stages": [], "prefect_task_run_each": 0.01}
    return _done(argv, stdout=json.dumps(probe) + "\n")


def fake_runner(argv: Sequence[str], env: Mapping[str, str] | None, cwd: Path | None) -> CommandRun:
    args = list(argv)
    if "bench.startup_probe" in args:
        return _fake_probe(args)
    if args[1:] == ["-c", "pass"]:
        return _done(args)
    if "bench.monai_infer" in args:
        return _fake_monai(args)
    if "--help" in args:
        return _done(args, stdout="usage: segpipe\n")
    return _fake_segpipe_run(args)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """Every benchmark at tiny sizes with the fake runner: (summary, results folder)."""
    root = tmp_path_factory.mktemp("bench")
    ctx = Context(TINY, root / "work", runner=fake_runner, log=lambda message: None)
    return run_benchmarks(ctx, list(BENCHMARKS), root / "results", "python -m bench --test"), root / "results"


def test_every_benchmark_writes_its_json(session: tuple[dict[str, Any], Path]) -> None:
    summary, results = session
    assert {path.stem for path in results.glob("*.json")} == {*BENCHMARKS, "summary"}
    for name in BENCHMARKS:
        result = json.loads((results / f"{name}.json").read_text())
        assert RESULT_KEYS <= set(result), name
        assert "error" not in result, result.get("error")
        assert result["benchmark"] == name
        assert result["quick"] is True
        assert {"cpus", "cpu_model", "torch", "load_average_1m"} <= set(result["machine"])
        assert all(value is None or isinstance(value, float) for value in result["ratios"].values()), name
        assert all(set(goal) == GOAL_KEYS for goal in result["goals"]), name


def test_summary_lists_every_goal_with_pass_or_miss(session: tuple[dict[str, Any], Path]) -> None:
    summary, results = session
    assert json.loads((results / "summary.json").read_text()) == summary
    assert set(summary["benchmarks"]) == set(BENCHMARKS)
    assert all(entry["error"] is None for entry in summary["benchmarks"].values())
    names = {goal["name"] for goal in summary["goals"]}
    assert names == {
        "floor/command 64^2",
        "command/infer stage seconds 64^2",
        "peak RSS MiB 128^2",
        "peak RSS 128^2/64^2",
        "seconds run 64^2",
        "seconds missing file",
        "batch/single 4x32^2 vs 64^2",
        "segpipe/MONAI seconds 64^2",
        "segpipe/MONAI-NHWC seconds 64^2",
        "segpipe/MONAI peak RSS 64^2",
        "objects/plain seconds 64^2",
        "objects peak RSS MiB 128^2",
        "tissue/whole seconds 128^2",
        "0.25um-with-level/0.5um seconds 128^2",
    }
    assert {goal["status"] for goal in summary["goals"]} <= {"pass", "miss", "n/a"}
    sized = [g for g in summary["goals"] if g["benchmark"] in ("end_to_end", "memory_scaling")]
    assert all("the issue sets it at" in goal["note"] for goal in sized)  # tiny sizes say so
    assert RUN_KEYS <= set(summary["warm_up"])
    printed = table(summary)
    assert all(name in printed for name in BENCHMARKS)


def test_ratios_and_runs(session: tuple[dict[str, Any], Path]) -> None:
    _, results = session
    load = lambda name: json.loads((results / f"{name}.json").read_text())  # noqa: E731
    floor = load("floor")["runs"]["64"]
    ceiling = (256 / 312) ** 2  # the default tile 256 and the U-Net's 28-pixel halo on each side
    assert floor["window"] == 312
    assert floor["windows"] == 1
    assert floor["halo_ceiling"] == pytest.approx(ceiling)
    assert floor["layout"] == "channels_last"
    assert floor["compile"] == "fold"  # the pipeline's default --compile, through its loader
    assert floor["fastest_way"] in floor["passes_seconds"]
    end_to_end = load("end_to_end")["runs"]["64"]
    assert RUN_KEYS <= set(end_to_end)
    assert set(end_to_end["floor_over_stage"]) >= {"ingest", "infer"}
    assert end_to_end["floor_over_command"] == pytest.approx(floor["floor_seconds"] / end_to_end["seconds"])
    assert end_to_end["output"]["parts"]["mask_level0"]["objects"] == 2  # zarr.json and the one chunk
    monai = load("monai")["runs"]["64"]
    assert monai["agreement"] == 1.0
    assert monai["overlap"] == pytest.approx(56 / 312)
    assert monai["rss_ratio"] == 1.0
    assert monai["seconds_ratio_channels_last"] == 1.0
    assert "--channels-last" in monai["monai_channels_last"]["command"]
    assert load("overhead")["missing_file"]["returncode"] == 2
    pair = load("batch_vs_single")["runs"]["batch/single 4x32^2 vs 64^2"]
    assert pair["rounds"] == 2
    assert pair["batch_seconds_each"] == [1.5, 1.5]  # the fake runner's seconds, one per round
    assert pair["single_seconds_each"] == [1.5, 1.5]
    assert pair["seconds_ratio"] == 1.0
    startup = load("startup")
    assert startup["ratios"]["seconds import torch"] == 1.0
    assert startup["ratios"]["seconds per image preview.png"] == 0.1
    s3 = load("s3_vs_local")
    assert "s3://" in s3["s3"]["command"]
    assert set(s3["requests"]["by_size"]) == {"64", "128"}
    assert s3["requests"]["by_size"]["64"] == {}  # the uploads are not counted, and the fake command sent none
    assert load("memory_scaling")["runs"]["128"]["input_bytes"] > 0


def test_request_fit_splits_fixed_and_per_chunk_requests() -> None:
    fit = request_fit({"2048": {"GET": 10 + 4 * 9, "PUT": 5}, "4096": {"GET": 10 + 16 * 9, "PUT": 5}})
    assert fit is not None
    assert fit["GET"] == {"per_image": 10, "per_chunk": 9, "gigapixel": 10 + 9 * 1024}
    assert fit["PUT"]["per_chunk"] == 0
    assert request_fit({"512": {"GET": 3}, "1024": {"GET": 4}}) is None  # one chunk each: no split
    assert [request_kind("GET", t) for t in ("/b?list-type=2&prefix=x", "/b/k", "/b")] == ["LIST", "GET", "LIST"]


def test_measure_command_samples_the_whole_process_tree() -> None:
    child = "b = bytearray(96 << 20); import time; time.sleep(0.6)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}]); print('done')"
    done = measure_command([sys.executable, "-c", parent])
    assert done.returncode == 0
    assert done.stdout.strip() == "done"
    assert done.peak_processes >= 2
    assert done.peak_rss_bytes >= 96 << 20


def test_streamed_tiff_is_tiled_and_cycles_the_pool(tmp_path: Path) -> None:
    path = write_streamed_tiff(tmp_path / "streamed.tif", 1000)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        assert page.shape == (1000, 1000)
        assert (page.tilelength, page.tilewidth) == (STREAM_TILE, STREAM_TILE)
        pixels = page.asarray()
    assert np.array_equal(pixels[:STREAM_TILE, :STREAM_TILE], tile_pool(0)[0])


def test_pointwise_model_is_valid_and_near_free(tmp_path: Path) -> None:
    ref = resolve_model(str(write_pointwise_model(tmp_path)))
    assert ref.format == "torchscript"
    assert ref.card.default_halo == 0
    assert ref.card.size_divisor == 1
    batch = np.array([[[[500.0, 1500.0]]]], np.float32)
    assert load_predictor(ref, "cpu")(batch).argmax(axis=1).tolist() == [[[0, 1]]]


def test_monai_goals_check_every_size_and_the_largest_for_memory() -> None:
    from bench.monai_compare import goals

    ratios = {
        "segpipe/MONAI seconds 2048^2": 1.2,
        "segpipe/MONAI-NHWC seconds 2048^2": 0.9,
        "segpipe/MONAI seconds 8192^2": 0.7,
        "segpipe/MONAI-NHWC seconds 8192^2": 1.1,
        "segpipe/MONAI peak RSS 8192^2": 0.45,
    }
    checked = {goal.name: goal.status for goal in goals(ratios, [8192, 2048])}
    assert checked == {
        "segpipe/MONAI seconds 2048^2": "miss",
        "segpipe/MONAI seconds 8192^2": "pass",
        "segpipe/MONAI-NHWC seconds 2048^2": "pass",  # tuned MONAI: the smallest size only
        "segpipe/MONAI peak RSS 8192^2": "pass",
    }


def test_import_seconds_sum_each_top_level_package() -> None:
    from bench.startup import import_seconds

    stderr = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:      1500 |       1500 |     torch._C\n"
        "import time:       500 |       2000 |   torch\n"
        "import time:       250 |        250 | zarr\n"
        "some other line\n"
    )
    assert import_seconds(stderr) == {"torch": pytest.approx(0.002), "zarr": pytest.approx(0.00025)}


def test_compile_compares_each_form_with_eager(session: tuple[dict[str, Any], Path]) -> None:
    _, results = session
    result = json.loads((results / "compile.json").read_text())
    assert result["window"] == 312
    assert result["batch_size"] == 1
    assert result["pipeline_default"] == "fold"
    forms = result["forms"]
    assert set(forms) == {"eager", "fold", "ts", "ts_fold"}
    for name in ("fold", "ts_fold"):
        assert forms[name]["argmax_agreement"] == 1.0, name
        assert forms[name]["max_abs_diff"] < 1e-4, name
        assert set(forms[name]["seconds_per_batch"]) == {"one_stream", "stream_per_core"}
    assert set(result["ratios"]) == {"fold/eager s per batch", "ts/eager s per batch", "ts_fold/eager s per batch"}
