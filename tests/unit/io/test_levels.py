"""Levels, pixel sizes and the level a model reads (segpipe/io/levels.py, segpipe/io/resolution.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from segpipe.errors import ConfigError
from segpipe.io.images import open_image
from segpipe.io.levels import ImageLevels, Level, level_source, read_levels
from segpipe.io.resolution import choose_level
from segpipe.units import PixelSize, parse_pixel_size

from .slide_files import tissue_slide, write_geotiff, write_ome_pyramid, write_ome_zarr, write_svs

RNG = np.random.default_rng(3)


@pytest.fixture(scope="module")
def svs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image, _ = tissue_slide(1024, 1536)
    return write_svs(tmp_path_factory.mktemp("svs") / "slide.svs", image, downsamples=(4, 16))


@pytest.fixture(scope="module")
def ome(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    image = RNG.integers(0, 4000, (2, 256, 384)).astype(np.uint16)
    return write_ome_pyramid(tmp_path_factory.mktemp("ome") / "cells.ome.tif", image, (0.325, 0.325)), image


@pytest.fixture(scope="module")
def geotiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    image = RNG.integers(1, 3000, (3, 200, 300)).astype(np.uint16)
    return write_geotiff(tmp_path_factory.mktemp("geo") / "scene.tif", image, 10.0, 0, overviews=2)


def test_svs_levels_carry_the_aperio_mpp(svs: Path) -> None:
    levels = read_levels(open_image(svs))
    assert [lv.shape for lv in levels.levels] == [(3, 1024, 1536), (3, 256, 384), (3, 64, 96)]
    assert [lv.pixel_size for lv in levels.levels] == [
        PixelSize(0.25, 0.25, "um"),
        PixelSize(1.0, 1.0, "um"),
        PixelSize(4.0, 4.0, "um"),
    ]


def test_ome_tiff_subifd_levels_carry_physical_sizes(ome: tuple[Path, np.ndarray]) -> None:
    levels = read_levels(open_image(ome[0]))
    assert [lv.downsample for lv in levels.levels] == [(1.0, 1.0), (2.0, 2.0), (4.0, 4.0)]
    assert levels.levels[2].pixel_size == PixelSize(1.3, 1.3, "um")


def test_a_level_source_reads_that_level(ome: tuple[Path, np.ndarray]) -> None:
    path, image = ome
    source = open_image(path)
    second = level_source(source, read_levels(source), 2)
    assert second.shape == (2, 64, 96)
    np.testing.assert_array_equal(second.read(0, 64, 0, 96), image[:, ::4, ::4])


def test_geotiff_pixel_size_is_in_the_crs_unit_and_overviews_are_levels(geotiff: Path) -> None:
    levels = read_levels(open_image(geotiff))
    assert [lv.pixel_size for lv in levels.levels] == [
        PixelSize(10.0, 10.0, "m"),
        PixelSize(20.0, 20.0, "m"),
        PixelSize(40.0, 40.0, "m"),
    ]


def test_a_geographic_geotiff_is_in_degrees(tmp_path: Path) -> None:
    keys = (1, 1, 0, 2, 1024, 0, 1, 2, 2048, 0, 1, 4326)
    tags = [(33550, "d", 3, (0.001, 0.001, 0.0)), (34735, "H", len(keys), keys)]
    tifffile.imwrite(tmp_path / "wgs84.tif", np.zeros((20, 30), np.uint8), extratags=tags)
    assert read_levels(open_image(tmp_path / "wgs84.tif")).pixel_size == PixelSize(0.001, 0.001, "deg")


def test_tiff_resolution_tags_in_centimetres_are_a_pixel_size(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "r.tif", np.zeros((20, 30), np.uint8), resolution=(20000, 10000), resolutionunit=3)
    assert read_levels(open_image(tmp_path / "r.tif")).pixel_size == PixelSize(1.0, 0.5, "um")


def test_a_plain_tiff_and_a_plain_zarr_have_one_level_and_no_pixel_size(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((20, 30), np.uint8))
    zarr.create_array(tmp_path / "plain.zarr", data=np.zeros((20, 30), np.uint8), chunks=(8, 8))
    for path in ("plain.tif", "plain.zarr"):
        levels = read_levels(open_image(tmp_path / path))
        assert levels.levels == (Level(0, (1, 20, 30), (1.0, 1.0), None),)


@pytest.mark.parametrize(("unit", "expected"), [("micrometer", "um"), (None, None)])
def test_ome_zarr_multiscales_give_levels_with_their_scale_and_unit(
    tmp_path: Path, unit: str | None, expected: str | None
) -> None:
    image = RNG.integers(0, 255, (3, 128, 96)).astype(np.uint8)
    store = write_ome_zarr(tmp_path / "img.ome.zarr", image, (0.5, 0.5), unit, levels=3)
    source = open_image(store / "0")
    levels = read_levels(source)
    assert [lv.shape for lv in levels.levels] == [(3, 128, 96), (3, 64, 48), (3, 32, 24)]
    assert [lv.pixel_size for lv in levels.levels] == (
        [PixelSize(0.5 * 2**i, 0.5 * 2**i, "um") for i in range(3)] if expected else [None] * 3
    )
    np.testing.assert_array_equal(level_source(source, levels, 1).read(0, 64, 0, 48), image[:, ::2, ::2])


def test_a_level_that_does_not_exist_is_one_config_error(svs: Path) -> None:
    with pytest.raises(ConfigError, match=r"level 5 does not exist \(levels 0..2\)"):
        read_levels(open_image(svs)).level(5)


# -- the level a model reads ---------------------------------------------------------------------------


def _pyramid(base: PixelSize | None, downsamples: tuple[float, ...] = (1, 4, 16)) -> ImageLevels:
    size = 4096
    levels = tuple(
        Level(i, (3, int(size / d), int(size / d)), (d, d), base.scaled(d, d) if base else None)
        for i, d in enumerate(downsamples)
    )
    return ImageLevels("slide.svs", levels)


@pytest.mark.parametrize(
    ("model", "level", "factor"),
    [
        ("0.25um", 0, 1.0),  # as stored
        ("0.5um", 0, 2.0),  # 20x from a 40x slide without a 20x level: 2 x 2 means
        ("1um", 1, 1.0),  # a stored level
        ("1.04um", 1, 1.0),  # within the 5 % tolerance: equal
        ("2um", 1, 2.0),  # between levels: the finer one, then shrink
        ("4um", 2, 1.0),
        ("16um", 2, 4.0),
        ("0.1um", 0, 0.4),  # finer than any level: the finest, enlarged
        ("500nm", 0, 2.0),  # units convert
        ("0.000001m", 1, 1.0),
    ],
)
def test_the_level_closest_to_the_model_without_being_coarser(model: str, level: int, factor: float) -> None:
    choice = choose_level(_pyramid(PixelSize(0.25, 0.25, "um")), parse_pixel_size(model))
    assert choice.level.index == level
    assert choice.factor == pytest.approx((factor, factor))


def test_a_factor_close_to_a_whole_number_is_made_whole() -> None:
    choice = choose_level(_pyramid(PixelSize(0.252, 0.252, "um")), parse_pixel_size("0.5um"))
    assert choice.factor == (2.0, 2.0)


def test_the_choice_gives_the_grid_pixel_size() -> None:
    choice = choose_level(_pyramid(PixelSize(0.25, 0.25, "um")), parse_pixel_size("2um"))
    assert choice.pixel_size == PixelSize(2.0, 2.0, "um")


def test_without_a_model_pixel_size_level_0_is_read_as_stored() -> None:
    choice = choose_level(_pyramid(None), None)
    assert (choice.level.index, choice.factor, choice.resampled) == (0, (1.0, 1.0), False)


def test_a_model_pixel_size_on_an_image_without_one_names_the_file_and_the_override() -> None:
    with pytest.raises(ConfigError, match=r"slide.svs: .*declares no pixel size.*--pixel-size") as caught:
        choose_level(_pyramid(None), parse_pixel_size("0.5um"))
    assert "\n" not in str(caught.value)


def test_the_override_gives_the_image_its_pixel_size() -> None:
    levels = _pyramid(None).with_pixel_size(parse_pixel_size("0.25um"))
    assert choose_level(levels, parse_pixel_size("1um")).level.index == 1


def test_a_model_in_metres_on_an_image_in_degrees_is_refused() -> None:
    with pytest.raises(ConfigError, match="deg cannot be converted to m"):
        choose_level(_pyramid(PixelSize(0.001, 0.001, "deg")), parse_pixel_size("10m"))


def test_a_level_picked_by_hand_is_read_and_resampled_to_the_model() -> None:
    choice = choose_level(_pyramid(PixelSize(0.25, 0.25, "um")), parse_pixel_size("2um"), level=0)
    assert (choice.level.index, choice.factor) == (0, (8.0, 8.0))
