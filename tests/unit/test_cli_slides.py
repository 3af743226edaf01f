"""End to end through ``segpipe run``: an RGB slide two-thirds glass with --foreground tissue, resuming it, and a
GeoTIFF resampled to a model card's coarser pixel size (the exported GeoTIFF and the NGFF scale)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import tifffile
import torch
import zarr
from torch import nn

from segpipe.cli import main
from tests.unit.helpers import save_torchscript
from tests.unit.io.slide_files import tissue_slide, write_geotiff, write_svs

SIZE, CHUNK = 768, 128
STAIN_CARD = {
    "name": "stain",
    "in_channels": 3,
    "num_classes": 2,
    "class_names": ["background", "stained"],
    "size_divisor": 1,
    "halo": 4,
    "receptive_field": 2,
    "normalization": "none",
}


class Stain(nn.Module):
    """Class 1 where the 5x5 mean of the raw RGB is darker than 200: a fixed model, so no image statistic moves it."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, stride=1, padding=2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dark = (200.0 - self.pool(x.mean(dim=1, keepdim=True))) / 10.0
        return torch.cat([torch.zeros_like(dark), dark], dim=1)


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, Path]:
    folder = tmp_path_factory.mktemp("slide")
    image, truth = tissue_slide(SIZE, SIZE)
    model = save_torchscript(Stain(), folder / "stain.pt", STAIN_CARD)
    return write_svs(folder / "slide.svs", image, downsamples=(4,)), truth, model


def _run(image: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    args = ["run", str(image), "--chunk", str(CHUNK), "--tile", str(CHUNK), "--out", str(out), *extra]
    code = main([*args, "--tracking-uri", f"sqlite:///{out.parent / 'mlflow.db'}", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report: dict[str, Any] = json.loads(captured.out)["images"][0]
    return report


def _mask(report: dict[str, Any]) -> np.ndarray:
    return np.asarray(zarr.open_array(report["mask"], mode="r")[:])


def test_tissue_run_skips_glass_chunks_and_matches_the_whole_run_inside_tissue(
    slide: tuple[Path, np.ndarray, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, truth, model = slide
    tissue = _run(image, tmp_path / "tissue", capsys, "--model", str(model), "--foreground", "tissue")
    whole = _run(image, tmp_path / "whole", capsys, "--model", str(model), "--foreground", "none")
    assert tissue["chunks_skipped"] > 0
    assert tissue["chunks_computed"] == tissue["chunks"] - tissue["chunks_skipped"]
    assert whole["chunks_computed"] == whole["chunks"] == (SIZE // CHUNK) ** 2
    assert tissue["foreground_fraction"] == pytest.approx(truth.mean(), abs=0.03)
    assert np.array_equal(_mask(tissue)[truth], _mask(whole)[truth])


def test_glass_tiles_inside_computed_chunks_are_background_and_not_computed(
    slide: tuple[Path, np.ndarray, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tiles of 32 in chunks of 128: a chunk on the tissue's rim computes only the tiles the tissue reaches."""
    image, truth, model = slide
    args = ("--model", str(model), "--tile", "32")
    tissue = _run(image, tmp_path / "tissue", capsys, *args, "--foreground", "tissue")
    whole = _run(image, tmp_path / "whole", capsys, *args, "--foreground", "none")
    by_chunks = _run(image, tmp_path / "chunks", capsys, "--model", str(model), "--foreground", "tissue")
    computed = tissue["chunks_computed"] * CHUNK**2 / 1e6
    assert tissue["chunks_computed"] == by_chunks["chunks_computed"]
    assert tissue["megapixels_computed"] < computed  # tiles were skipped inside computed chunks
    assert by_chunks["megapixels_computed"] == pytest.approx(computed)  # one tile per chunk: none to skip
    tissue_mask, whole_mask = _mask(tissue), _mask(whole)
    assert np.array_equal(tissue_mask[truth], whole_mask[truth])
    assert np.array_equal(tissue_mask[truth], _mask(by_chunks)[truth])
    assert sum(tissue["class_pixels"]) == round(tissue["megapixels_computed"] * 1e6)


def test_second_run_computes_nothing_and_a_lost_marker_recomputes_one_chunk(
    slide: tuple[Path, np.ndarray, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, _, model = slide
    out = tmp_path / "out"
    first = _run(image, out, capsys, "--model", str(model), "--foreground", "tissue")
    again = _run(image, out, capsys, "--model", str(model), "--foreground", "tissue")
    assert again["chunks_computed"] == 0
    assert again["skipped"] is True
    store = out / "slide" / "slide.ome.zarr"
    (ledger,) = (store / ".segpipe").glob("infer-*")
    lost = ledger / f"{3 * CHUNK}_{3 * CHUNK}"  # the slide's centre: inside the second disc of tissue
    lost.unlink()
    _uncommit(out / "slide", store)
    resumed = _run(image, out, capsys, "--model", str(model), "--foreground", "tissue")
    assert resumed["chunks_computed"] == 1
    assert lost.exists()
    assert np.array_equal(_mask(resumed), _mask(first))


def _uncommit(folder: Path, store: Path) -> None:
    """Leave the outputs as a run killed before its commit would: no done.json and no commit in the store."""
    (folder / "done.json").unlink()
    group = zarr.open_group(store, mode="r+")
    attrs = dict(group.attrs["segpipe"])
    del attrs["infer_key"]
    group.attrs["segpipe"] = attrs


def test_resampled_geotiff_exports_the_coarser_grid_at_the_same_origin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = np.full((3, 256, 256), 250, np.uint16)
    data[:, 64:192, 96:160] = 120  # dark: the model's class 1
    scene = write_geotiff(tmp_path / "scene.tif", data, metres=10.0, nodata=None, overviews=0)
    model = save_torchscript(Stain(), tmp_path / "stain20.pt", {**STAIN_CARD, "pixel_size": "20m"})
    report = _run(scene, tmp_path / "out", capsys, "--model", str(model), "--export-tiff")
    mask = _mask(report)
    assert mask.shape == (128, 128)
    assert mask[34:94, 50:78].all()  # the dark block at half the resolution, less the corners the 5x5 mean rounds
    assert not mask[:, :40].any()
    with rasterio.open(tmp_path / "out" / "scene" / "scene_mask.tif") as exported:
        transform = exported.transform
    assert (transform.a, transform.e) == (20.0, -20.0)
    assert (transform.c, transform.f) == (500000.0, 4000000.0)
    assert _ngff_scale(tmp_path / "out" / "scene" / "scene.ome.zarr" / "labels" / "mask")[-2:] == [20.0, 20.0]


def _ngff_scale(labels: Path) -> list[float]:
    """The scale of level 0 of the label image at ``labels``, as ome-zarr-py reads its multiscales."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    location = parse_url(str(labels))
    assert location is not None
    (node, *_) = Reader(location)()
    (scale,) = [t for t in node.metadata["coordinateTransformations"][0] if t["type"] == "scale"]
    return [float(value) for value in scale["scale"]]


def test_metrics_count_only_the_tissue_and_report_the_glass_apart(
    slide: tuple[Path, np.ndarray, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, truth, model = slide
    labels = tmp_path / "truth.tif"
    tifffile.imwrite(labels, truth.astype(np.uint8))
    args = ("--model", str(model), "--foreground", "tissue", "--truth", str(labels))
    report = _run(image, tmp_path / "out", capsys, *args)
    assert report["pixels"] + report["background_pixels_excluded"] == SIZE * SIZE
    assert report["pixels"] / SIZE**2 == pytest.approx(truth.mean(), abs=0.03)
    assert report["recall"][1] > 0.95  # the stained tissue, scored where it is, is found
    (table,) = (tmp_path / "out" / "results").glob("run_date=*/*.parquet")
    (row,) = pq.read_table(table).to_pylist()
    assert row["background_pixels_excluded"] == report["background_pixels_excluded"] > 0
    assert 0 < row["megapixels_computed"] < row["megapixels"] == SIZE * SIZE / 1e6
    assert row["foreground_fraction"] == pytest.approx(truth.mean(), abs=0.03)
