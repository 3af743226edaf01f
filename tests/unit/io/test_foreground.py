"""Foreground masks and the chunks they keep (segpipe/io/foreground.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from segpipe.errors import ConfigError, InputError
from segpipe.io.foreground import (
    Foreground,
    ForegroundIndex,
    Nodata,
    background_tiles,
    choose_foreground,
    clean_mask,
    foreground_chunks,
    mask_foreground,
    nodata_foreground,
    otsu_threshold,
    read_nodata,
    tissue_foreground,
    tissue_mask,
    valid_pixels,
)
from segpipe.io.images import open_image
from segpipe.io.levels import read_levels
from segpipe.tiling import Region, chunk_grid, tiles_in

from .slide_files import tissue_slide, write_geotiff, write_svs


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    image, truth = tissue_slide(3072, 4096)
    return write_svs(tmp_path_factory.mktemp("slide") / "slide.svs", image, downsamples=(4, 16)), truth


def _truth_at(truth: np.ndarray, foreground: Foreground) -> np.ndarray:
    """The truth on the foreground's grid (each mask pixel's level-0 top-left pixel)."""
    sy, sx = foreground.scale
    rows = (np.arange(foreground.mask.shape[0]) * sy).astype(int)
    cols = (np.arange(foreground.mask.shape[1]) * sx).astype(int)
    return truth[np.ix_(rows, cols)]


def test_the_slide_is_two_thirds_glass(slide: tuple[Path, np.ndarray]) -> None:
    assert slide[1].mean() == pytest.approx(1 / 3, abs=0.05)


@pytest.mark.parametrize("method", ["saturation", "density"])
def test_tissue_fraction_is_within_a_few_percent_of_the_truth(slide: tuple[Path, np.ndarray], method: str) -> None:
    path, truth = slide
    source = open_image(path)
    found = tissue_foreground(source, read_levels(source), method)
    assert found.fraction == pytest.approx(float(truth.mean()), abs=0.03)


def test_tissue_is_found_on_a_low_resolution_level(slide: tuple[Path, np.ndarray]) -> None:
    source = open_image(slide[0])
    found = tissue_foreground(source, read_levels(source))
    assert found.scale == (4.0, 4.0)
    assert found.mask.shape == (768, 1024)


def test_tissue_pixels_agree_with_the_truth(slide: tuple[Path, np.ndarray]) -> None:
    path, truth = slide
    source = open_image(path)
    found = tissue_foreground(source, read_levels(source))
    assert (found.mask == _truth_at(truth, found)).mean() > 0.97


def test_all_glass_has_no_tissue_and_dust_is_not_tissue() -> None:
    rng = np.random.default_rng(0)
    glass = np.clip(rng.normal(240, 3, (3, 200, 200)), 0, 255).astype(np.uint8)
    glass[:, 50:52, 50:52] = 80
    assert not tissue_mask(glass).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_otsu_threshold_is_scikit_images(seed: int) -> None:
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(seed)
    values = np.concatenate([rng.normal(0.05, 0.02, 5000), rng.normal(0.4, 0.1, 3000)]).astype(np.float32)
    assert otsu_threshold(values) == pytest.approx(float(threshold_otsu(values)), rel=1e-6)


def test_clean_mask_keeps_tissue_on_the_border_and_drops_specks() -> None:
    mask = np.zeros((60, 60), bool)
    mask[:, :20] = True  # tissue cut by the left and top/bottom borders
    mask[30:33, 40:43] = True  # a 9-pixel speck
    mask[10, 10] = False  # a hole
    cleaned = clean_mask(mask, radius=2, min_object=16)
    assert np.array_equal(cleaned[:, :20], np.ones((60, 20), bool))
    assert not cleaned[:, 21:].any()


def test_tissue_needs_colour(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "grey.tif", np.zeros((40, 40), np.uint8))
    source = open_image(tmp_path / "grey.tif")
    with pytest.raises(ConfigError, match="grey.tif: --foreground tissue needs an RGB image"):
        tissue_foreground(source, read_levels(source))


# -- nodata ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collar(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 3-band scene whose footprint is a tilted square; the collar around it is nodata 0."""
    rows, cols = np.mgrid[0:256, 0:320]
    footprint = (np.abs(rows - 128) + np.abs(cols - 160)) < 140
    image = np.random.default_rng(5).integers(1, 4000, (3, 256, 320)).astype(np.uint16) * footprint
    return write_geotiff(tmp_path_factory.mktemp("geo") / "scene.tif", image, 10.0, 0, overviews=1), footprint


def test_the_geotiff_declares_its_nodata(collar: tuple[Path, np.ndarray]) -> None:
    assert read_nodata(open_image(collar[0])) == Nodata(0.0, None)


def test_nodata_foreground_is_the_footprint(collar: tuple[Path, np.ndarray]) -> None:
    source = open_image(collar[0])
    found = nodata_foreground(source, read_levels(source))
    assert found.mask.shape == (256, 320)
    np.testing.assert_array_equal(found.mask, collar[1])


def test_auto_is_nodata_on_a_scene_that_declares_it(collar: tuple[Path, np.ndarray]) -> None:
    source = open_image(collar[0])
    found = choose_foreground("auto", source, read_levels(source))
    assert found is not None
    assert found.kind == "nodata"


def test_auto_is_tissue_on_an_rgb_pyramid_and_none_on_a_plain_image(
    slide: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    source = open_image(slide[0])
    found = choose_foreground("auto", source, read_levels(source))
    assert found is not None
    assert found.kind == "tissue"
    tifffile.imwrite(tmp_path / "plain.tif", np.ones((40, 40), np.uint16))
    plain = open_image(tmp_path / "plain.tif")
    assert choose_foreground("auto", plain, read_levels(plain)) is None


def test_nan_and_alpha_are_nodata() -> None:
    data = np.ones((2, 3, 3), np.float32)
    data[:, 0, 0] = np.nan
    data[0, 1, 1] = np.nan  # one band of two: still data
    assert valid_pixels(data, Nodata()).sum() == 8
    rgba = np.full((4, 2, 2), 255, np.uint8)
    rgba[3, 0, :] = 0
    np.testing.assert_array_equal(valid_pixels(rgba, Nodata(None, 3)), [[False, False], [True, True]])


def test_an_rgba_tiff_declares_its_alpha_band(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "rgba.tif", np.zeros((8, 8, 4), np.uint8), photometric="rgb", extrasamples=[2])
    assert read_nodata(open_image(tmp_path / "rgba.tif")) == Nodata(None, 3)


# -- a user's mask -------------------------------------------------------------------------------------


def test_a_mask_at_another_resolution_covers_the_image(collar: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "mask.tif", collar[1][::4, ::4].astype(np.uint8) * 7)
    found = mask_foreground(str(tmp_path / "mask.tif"), open_image(collar[0]))
    assert found.scale == (4.0, 4.0)
    assert found.fraction == pytest.approx(float(collar[1].mean()), abs=0.01)


def test_a_mask_of_another_aspect_ratio_is_one_input_error(collar: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "square.tif", np.ones((64, 64), np.uint8))
    with pytest.raises(InputError, match="square.tif: foreground mask of 64 x 64 pixels has another aspect ratio"):
        mask_foreground(str(tmp_path / "square.tif"), open_image(collar[0]))


# -- the chunks to compute ------------------------------------------------------------------------------


def test_only_chunks_with_foreground_within_the_halo_are_kept() -> None:
    mask = np.zeros((16, 16), bool)
    mask[0:2, 0:2] = True  # level-0 pixels 0..63 of a 512 x 512 image, mask scale 32
    found = Foreground(mask, (32.0, 32.0), "mask")
    assert foreground_chunks(found, (512, 512), (1.0, 1.0), 128, 0) == frozenset({Region(0, 128, 0, 128)})
    kept = foreground_chunks(found, (512, 512), (1.0, 1.0), 128, 80)
    assert kept == frozenset(
        {Region(0, 128, 0, 128), Region(0, 128, 128, 256), Region(128, 256, 0, 128), Region(128, 256, 128, 256)}
    )


def test_chunks_on_a_downsampled_output_grid() -> None:
    mask = np.zeros((16, 16), bool)
    mask[15, 15] = True  # the bottom-right corner of a 512 x 512 level 0
    found = Foreground(mask, (32.0, 32.0), "tissue")
    kept = foreground_chunks(found, (256, 256), (2.0, 2.0), 64, 0)  # the model runs at half resolution
    assert kept == frozenset({Region(192, 256, 192, 256)})


def test_a_full_mask_keeps_every_chunk_and_an_empty_one_none() -> None:
    full = Foreground(np.ones((10, 10), bool), (10.0, 10.0), "mask")
    empty = Foreground(np.zeros((10, 10), bool), (10.0, 10.0), "mask")
    assert foreground_chunks(full, (100, 100), (1.0, 1.0), 30, 4) == frozenset(chunk_grid(100, 100, 30))
    assert foreground_chunks(empty, (100, 100), (1.0, 1.0), 30, 4) == frozenset()


def test_the_tissue_slide_keeps_fewer_chunks_than_it_has(slide: tuple[Path, np.ndarray]) -> None:
    source = open_image(slide[0])
    found = tissue_foreground(source, read_levels(source))
    kept = foreground_chunks(found, (3072, 4096), (1.0, 1.0), 512, 32)
    assert len(kept) < len(chunk_grid(3072, 4096, 512))


def test_background_tiles_are_those_without_foreground_within_the_halo() -> None:
    mask = np.zeros((16, 16), bool)
    mask[5, 5] = True  # mask pixels of 4 grid pixels: grid pixels 20..23
    index = ForegroundIndex(mask, (4.0, 4.0), (1.0, 1.0))
    chunks = [Region(0, 32, 0, 32), Region(32, 64, 32, 64)]
    found = background_tiles(index, chunks, 8, 4)
    kept = {t for t in tiles_in(Region(0, 32, 0, 32), 8)} - found[chunks[0]]
    assert kept == {Region(y, y + 8, x, x + 8) for y in (16, 24) for x in (16, 24)}
    assert found[chunks[1]] == frozenset(tiles_in(Region(0, 32, 0, 32), 8))
    assert background_tiles(index, [Region(16, 32, 16, 32)], 16, 0) == {}
