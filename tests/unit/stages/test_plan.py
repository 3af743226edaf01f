"""Planning a batch: validation that writes nothing; tiling resolved for the model (segpipe/stages/plan.py)."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from segpipe.config import EvalConfig, TilingConfig
from segpipe.errors import InputError, OutputError
from segpipe.metrics import finite_or_none
from segpipe.stages.infer import infer_image
from segpipe.stages.ingest import ingest_image
from segpipe.stages.plan import plan_batch, resolve_tiling
from segpipe.stages.report import write_json
from segpipe.stages.settings import RunSettings


@pytest.mark.parametrize(
    ("tiling", "divisor", "halo", "expected"),
    [
        (TilingConfig(64, 32, None), 4, 32, (64, 32, 32)),
        (TilingConfig(64, 30, 26), 4, 32, (64, 28, 28)),  # tile down, halo up to the divisor
        (TilingConfig(64, 2, 30), 16, 32, (64, 16, 32)),  # tile at least one divisor
        (TilingConfig(48, 256, None), 16, 20, (48, 48, 32)),  # tile at most the chunk
    ],
)
def test_resolve_tiling_aligns_tile_and_halo(builtin_ref, tiling, divisor, halo, expected) -> None:
    ref = replace(builtin_ref, card=replace(builtin_ref.card, size_divisor=divisor, halo=halo))
    assert resolve_tiling(tiling, ref) == expected


def test_plan_batch_validates_and_writes_nothing(tmp_path: Path) -> None:
    image = tmp_path / "cells.ome.tif"
    tifffile.imwrite(image, np.ones((30, 40), np.uint16))
    tifffile.imwrite(tmp_path / "truth.tif", np.zeros((30, 40), np.uint8))
    out = tmp_path / "out" / "nested"
    plan = plan_batch([str(image)], [str(tmp_path / "truth.tif")], RunSettings(out=str(out)))
    assert [job.name for job in plan.jobs] == ["cells"]
    assert plan.jobs[0].out_dir == str(out / "cells")
    assert plan.model.card.num_classes == 2
    assert not (tmp_path / "out").exists()


def test_plan_batch_refuses_float_truth_and_duplicate_names(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "a.tif", np.ones((8, 8), np.uint16))
    (tmp_path / "b").mkdir()
    tifffile.imwrite(tmp_path / "b" / "a.tif", np.ones((8, 8), np.uint16))
    tifffile.imwrite(tmp_path / "float.tif", np.zeros((8, 8), np.float32))
    with pytest.raises(InputError, match="float.tif: truth must hold integer"):
        plan_batch([str(tmp_path / "a.tif")], [str(tmp_path / "float.tif")], RunSettings(out=str(tmp_path / "o")))
    with pytest.raises(InputError, match="share the output name"):
        plan_batch([str(tmp_path / "a.tif"), str(tmp_path / "b" / "a.tif")], None, RunSettings(out=str(tmp_path)))


def test_finite_or_none_and_write_json(tmp_path: Path) -> None:
    payload = finite_or_none({"iou": [0.5, math.nan], "mean": math.inf, "n": 3, "name": "x"})
    assert payload == {"iou": [0.5, None], "mean": None, "n": 3, "name": "x"}
    path = write_json(str(tmp_path / "m.json"), {**payload, "count": np.int64(4)})
    assert json.loads(Path(path).read_text())["count"] == 4
    assert not (tmp_path / "m.json.tmp").exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_plan_batch_refuses_nonfinite_float_pixels(tmp_path: Path, bad: float) -> None:
    image = np.ones((20, 30), np.float32)
    image[17, 29] = bad
    tifffile.imwrite(tmp_path / "float.tif", image)
    with pytest.raises(InputError, match="1 pixel"):
        plan_batch([str(tmp_path / "float.tif")], None, RunSettings(out=str(tmp_path / "out")))
    assert not (tmp_path / "out").exists()


def test_plan_batch_refuses_truth_labels_outside_the_model_classes(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "img.tif", np.ones((20, 30), np.uint16))
    truth = np.zeros((20, 30), np.uint8)
    truth[3, 4] = 7
    tifffile.imwrite(tmp_path / "truth.tif", truth)
    images, truths = [str(tmp_path / "img.tif")], [str(tmp_path / "truth.tif")]
    with pytest.raises(InputError, match="truth label 7") as info:
        plan_batch(images, truths, RunSettings(out=str(tmp_path / "out")))
    assert str(info.value).startswith(truths[0])
    # The same truth is fine as instance ids, or with 7 as the void label.
    assert plan_batch(images, truths, RunSettings(out=str(tmp_path / "o"), evaluation=EvalConfig(None, True)))
    assert plan_batch(images, truths, RunSettings(out=str(tmp_path / "o"), evaluation=EvalConfig(7)))
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "o").exists()


def test_plan_batch_refuses_a_foreign_mask_unless_overwrite(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "img.tif", np.ones((20, 30), np.uint16))
    out = tmp_path / "out"
    zarr.create_array(out / "img" / "img.ome.zarr" / "labels" / "mask" / "0", shape=(20, 30), dtype="uint8")
    with pytest.raises(OutputError, match="--overwrite"):
        plan_batch([str(tmp_path / "img.tif")], None, RunSettings(out=str(out)))
    assert plan_batch([str(tmp_path / "img.tif")], None, RunSettings(out=str(out), overwrite=True)).jobs


def test_rerun_with_another_truth_reuses_the_finished_mask(tmp_path: Path) -> None:
    """Regression: the infer ledger said 'all done' after the partial mask had been renamed away, so a re-run
    with a different truth (same model and settings) replaced the finished mask by an empty one."""
    from segpipe.synthetic import write_sample

    image, truth = write_sample(tmp_path, 256, seed=1)
    other_truth = tmp_path / "other_truth.tif"
    tifffile.imwrite(other_truth, tifffile.imread(truth))
    settings = replace(RunSettings(out=str(tmp_path / "out")), tiling=TilingConfig(chunk=128))
    masks = []
    for truth_path in (str(truth), str(other_truth)):
        plan = plan_batch([str(image)], [truth_path], settings)
        ingested = ingest_image(plan.jobs[0], plan)
        inferred = infer_image(plan.jobs[0], ingested, plan, settings.inference)
        masks.append(zarr.open_array(inferred.mask, mode="r")[:])
    assert inferred.chunks_computed == 0
    assert (masks[0] == 1).mean() > 0.1
    np.testing.assert_array_equal(masks[1], masks[0])


def test_a_z_stack_is_segmented_plane_by_plane(tmp_path: Path) -> None:
    """Each plane of a ZYX stack (with a ZYX truth) gives the same mask as that plane saved as a 2-D image."""
    from segpipe.synthetic import render

    planes = [render(0, 96, 40 * z, 40 * z + 80, seed=5) for z in range(3)]
    image = np.stack([(p[0] * 4000).astype(np.uint16) for p in planes])
    truth = np.stack([p[1] for p in planes])
    tifffile.imwrite(tmp_path / "stack.tif", image, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "stack_truth.tif", truth, metadata={"axes": "ZYX"})
    tifffile.imwrite(tmp_path / "plane1.tif", image[1])
    settings = replace(RunSettings(out=str(tmp_path / "out")), tiling=TilingConfig(chunk=64, tile=32))

    def masks(paths: list[str], truths: list[str] | None) -> dict[str, np.ndarray]:
        plan = plan_batch(paths, truths, settings)
        out = {}
        for job in plan.jobs:
            ingested = ingest_image(job, plan)
            inferred = infer_image(job, ingested, plan, settings.inference)
            out[job.name] = zarr.open_array(inferred.mask, mode="r")[:]
            if job.truth is not None:
                np.testing.assert_array_equal(job.truth.read(0, 96, 0, 80)[0], truth[int(job.name[-4:])])
        return out

    stack = masks([str(tmp_path / "stack.tif")], [str(tmp_path / "stack_truth.tif")])
    assert sorted(stack) == ["stack-z0000", "stack-z0001", "stack-z0002"]
    single = masks([str(tmp_path / "plane1.tif")], None)["plane1"]
    assert single.mean() > 0.05
    # the stack's percentiles pool nothing across planes: plane 1 is normalised exactly as when alone
    np.testing.assert_array_equal(stack["stack-z0001"], single)


@pytest.mark.parametrize("layout", ["planar CYX", "interleaved YXS"])
def test_sixteen_band_image_runs_through_a_sixteen_band_model(tmp_path: Path, layout: str) -> None:
    """Multispectral input: 16 bands reach the model as (16, h, w), and tiled == whole-image inference."""
    from segpipe.models import load_predictor
    from tests.unit.helpers import TinyNet, save_torchscript, tiny_card, whole_image_labels

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = save_torchscript(TinyNet(in_channels=16), tmp_path / "ms.pt", tiny_card(in_channels=16))
    bands = np.random.default_rng(1).integers(0, 4000, (16, 70, 90)).astype(np.uint16)
    if layout == "planar CYX":
        tifffile.imwrite(tmp_path / "scene.tif", bands, metadata={"axes": "CYX"})
    else:
        tifffile.imwrite(
            tmp_path / "scene.tif",
            np.moveaxis(bands, 0, -1),
            planarconfig="contig",
            photometric="minisblack",
            metadata={"axes": "YXS"},
        )
    settings = replace(RunSettings(out=str(tmp_path / "out"), model=str(model)), tiling=TilingConfig(chunk=32, tile=16))
    plan = plan_batch([str(tmp_path / "scene.tif")], None, settings)
    job = plan.jobs[0]
    assert job.image.shape == (16, 70, 90)
    ingested = ingest_image(job, plan)
    inferred = infer_image(job, ingested, plan, settings.inference)
    predictor = load_predictor(plan.model, "cpu")
    expected = whole_image_labels(predictor, bands, plan.halo, None)
    np.testing.assert_array_equal(zarr.open_array(inferred.mask, mode="r")[:], expected)


@pytest.mark.parametrize(
    ("card", "expected"),
    [({"halo": 12}, 12), ({"receptive_field": 13}, 14), ({}, 32), ({"halo": 6, "receptive_field": 13}, 6)],
)
def test_default_halo_comes_from_the_card_then_the_receptive_field(tmp_path: Path, card: dict, expected: int) -> None:
    """No --halo: the card's halo, else its receptive field (rounded up to the size divisor 2), else 32."""
    from segpipe.models import resolve_model
    from tests.unit.helpers import TinyNet, save_torchscript, tiny_card

    base = tiny_card()
    base.pop("halo")
    path = save_torchscript(TinyNet(), tmp_path / "m.pt", {**base, **card})
    import contextlib

    from segpipe.errors import SegpipeWarning

    too_small = expected < card.get("receptive_field", 0)
    with pytest.warns(SegpipeWarning) if too_small else contextlib.nullcontext():
        _, _, halo = resolve_tiling(TilingConfig(chunk=64, tile=16), resolve_model(path))
    assert halo == expected


def test_a_resumed_build_removes_partial_writes_a_kill_left(tmp_path: Path) -> None:
    """Regression (kill -9 during zarr's write-then-rename): the empty ``<chunk>.<hex>.partial`` file left in the
    store must not survive the re-run, so the finished tree equals an uninterrupted run's."""
    import uuid

    from segpipe.io.ledger import ChunkLedger
    from segpipe.storage import location
    from segpipe.synthetic import write_sample
    from segpipe.tiling import Region

    image, _ = write_sample(tmp_path, 128, seed=2)
    plan = plan_batch([str(image)], None, RunSettings(out=str(tmp_path / "out"), tiling=TilingConfig(chunk=64)))
    job = plan.jobs[0]
    ledger = ChunkLedger(location(job.store), "ingest", job.ingest_key)
    ledger.mark_done(Region(0, 64, 0, 64))  # a build of ours was under way
    debris = Path(job.store) / "labels" / "mask" / "0" / "c" / "1" / f"0.{uuid.uuid4().hex}.partial"
    debris.parent.mkdir(parents=True)
    debris.write_bytes(b"")
    ingest_image(job, plan)
    assert not debris.exists()
    assert [p for p in Path(job.store).rglob("*.partial")] == []


def test_run_settings_round_trip_through_json() -> None:
    import json

    from segpipe.config import EvalConfig, InferenceConfig, TilingConfig
    from segpipe.stages.settings import CanarySet, RunSettings

    settings = RunSettings(
        model="baseline",
        out="/out",
        tiling=TilingConfig(chunk=256, tile=128, halo=16),
        inference=InferenceConfig(batch_size=4, device="cpu"),
        evaluation=EvalConfig(ignore_index=255, truth_mapping=((17, 1), (18, 2))),
        export_tiff=True,
    )
    assert RunSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    canary = CanarySet(("/c/a.tif",), ("/c/a_truth.tif",), 0.05, 3)
    assert CanarySet.from_dict(json.loads(json.dumps(canary.to_dict()))) == canary
