"""OME-Zarr output: opens with the ome-zarr reader, has image and label pyramids, carries pixel size and
GeoTIFF georeferencing through to the outputs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from segpipe.config import TilingConfig
from segpipe.io.omezarr import level_count, mean_2x2
from segpipe.stages.finalize import finalize_image
from segpipe.stages.infer import infer_image
from segpipe.stages.ingest import ingest_image
from segpipe.stages.plan import plan_batch
from segpipe.stages.settings import RunSettings
from segpipe.synthetic import render

GEO_TAGS = [
    (33550, 12, 3, (30.0, 30.0, 0.0), True),  # ModelPixelScale: 30 m pixels
    (33922, 12, 6, (0.0, 0.0, 0.0, 399960.0, 5000040.0, 0.0), True),  # tiepoint
    (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), True),  # UTM 33N
]


def _run(tmp_path: Path, image: Path, export_tiff: bool = False) -> dict:
    settings = replace(
        RunSettings(out=str(tmp_path / "out")),
        tiling=TilingConfig(chunk=256, tile=128),
        export_tiff=export_tiff,
    )
    plan = plan_batch([str(image)], None, settings)
    job = plan.jobs[0]
    ingested = ingest_image(job, plan)
    infer_image(job, ingested, plan, settings.inference)
    return finalize_image(job, plan, ingested.stats, export_tiff)


def _pixels(height: int, width: int) -> np.ndarray:
    image, _ = render(0, height, 0, width, seed=3)
    return (image * 4000).astype(np.uint16)


def test_ome_zarr_opens_with_the_reference_reader(tmp_path: Path) -> None:
    reader = pytest.importorskip("ome_zarr.reader", reason="ome-zarr is a dev dependency")
    from ome_zarr.io import parse_url

    tifffile.imwrite(tmp_path / "scan.tif", _pixels(700, 530))
    result = _run(tmp_path, tmp_path / "scan.tif")
    nodes = list(reader.Reader(parse_url(result.store))())
    image, labels = nodes[0], [n for n in nodes if n.load(reader.Label)]
    assert len(image.data) == level_count(700, 530) == 3
    assert [tuple(level.shape) for level in image.data] == [(1, 700, 530), (1, 350, 265), (1, 175, 133)]
    assert labels, "the reference reader found no label image"
    assert [tuple(level.shape) for level in labels[0].data] == [(700, 530), (350, 265), (175, 133)]
    mask = zarr.open_array(result.mask, mode="r")
    np.testing.assert_array_equal(np.asarray(labels[0].data[1]), mask[::2, ::2])  # labels: nearest, not mean
    assert np.asarray(labels[0].data[0]).max() == 1


def test_image_pyramid_is_a_2x2_mean(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "scan.tif", _pixels(600, 300))
    result = _run(tmp_path, tmp_path / "scan.tif")
    level0 = zarr.open_array(f"{result.store}/0", mode="r")[:].astype(np.float64)
    level1 = zarr.open_array(f"{result.store}/1", mode="r")[:]
    expected = level0.reshape(1, 300, 2, 150, 2).mean(axis=(2, 4))
    np.testing.assert_array_equal(level1, np.rint(expected).astype(np.uint16))


def test_geotiff_keys_come_back_on_export(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "scene.tif", _pixels(300, 400), extratags=GEO_TAGS)
    result = _run(tmp_path, tmp_path / "scene.tif", export_tiff=True)
    with tifffile.TiffFile(result.tiff) as exported, tifffile.TiffFile(tmp_path / "scene.tif") as original:
        assert exported.geotiff_metadata == original.geotiff_metadata
        assert exported.geotiff_metadata["ProjectedCSTypeGeoKey"] == 32633
        np.testing.assert_array_equal(exported.asarray(), zarr.open_array(result.mask, mode="r")[:])


def test_ome_physical_pixel_size_sets_the_scale(tmp_path: Path) -> None:
    tifffile.imwrite(
        tmp_path / "cells.ome.tif",
        _pixels(300, 300)[None],
        metadata={
            "axes": "CYX",
            "PhysicalSizeX": 0.325,
            "PhysicalSizeY": 0.325,
            "PhysicalSizeXUnit": "µm",
            "PhysicalSizeYUnit": "µm",
        },
    )
    result = _run(tmp_path, tmp_path / "cells.ome.tif")
    ome = zarr.open_group(f"{result.store}/labels/mask", mode="r").attrs["ome"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in ome["multiscales"][0]["datasets"]]
    assert scales == [[0.325, 0.325], [0.65, 0.65]]
    assert ome["multiscales"][0]["axes"][0] == {"name": "y", "type": "space", "unit": "micrometer"}
    assert ome["image-label"]["properties"] == [
        {"label-value": 0, "class": "background"},
        {"label-value": 1, "class": "nucleus"},
    ]


def test_probabilities_are_stored_as_float16_and_agree_with_the_mask(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "scan.tif", _pixels(200, 300))
    settings = replace(
        RunSettings(out=str(tmp_path / "out")),
        tiling=TilingConfig(chunk=128, tile=64),
        save_probabilities=True,
    )
    plan = plan_batch([str(tmp_path / "scan.tif")], None, settings)
    job = plan.jobs[0]
    ingested = ingest_image(job, plan)
    infer_image(job, ingested, plan, settings.inference)
    result = finalize_image(job, plan, ingested.stats)
    probabilities = zarr.open_array(result.probabilities, mode="r")
    assert probabilities.dtype == np.float16
    assert probabilities.shape == (2, 200, 300)
    values = probabilities[:].astype(np.float32)
    np.testing.assert_allclose(values.sum(axis=0), 1.0, atol=2e-3)
    mask = zarr.open_array(result.mask, mode="r")[:]
    confident = np.abs(values[1] - values[0]) > 0.01  # float16 rounding can flip near-ties only
    np.testing.assert_array_equal(values.argmax(axis=0)[confident], mask[confident])


@pytest.mark.parametrize("shape", [(1, 300, 301), (3, 257, 10), (1, 1, 1), (2, 5)])
@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_mean_2x2_in_bands_equals_the_whole_block_mean(shape: tuple[int, ...], dtype: type) -> None:
    """Band by band (MEAN_BAND output rows) gives what one float64 mean of the edge-padded block gives."""
    block = (np.random.default_rng(1).random(shape) * 60000).astype(dtype)
    h, w = shape[-2:]
    padded = np.pad(block.astype(np.float64), [(0, 0)] * (block.ndim - 2) + [(0, h % 2), (0, w % 2)], "edge")
    expected = padded.reshape(*padded.shape[:-2], -1, 2, padded.shape[-1] // 2, 2).mean(axis=(-3, -1))
    expected = np.rint(expected) if np.dtype(dtype).kind == "u" else expected
    np.testing.assert_array_equal(mean_2x2(block), expected.astype(dtype))
