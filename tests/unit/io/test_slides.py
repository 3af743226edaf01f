"""Whole-slide images through tiffslide and OpenSlide (segpipe/io/slides.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from segpipe.errors import ConfigError, InputError
from segpipe.io.images import open_image
from segpipe.io.levels import read_levels
from segpipe.io.slides import backend_for, open_slide
from segpipe.storage import location
from segpipe.tiling import Region
from segpipe.units import PixelSize

from .slide_files import tissue_slide, write_svs


@pytest.fixture(scope="module")
def svs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    image, _ = tissue_slide(1024, 1536)
    return write_svs(tmp_path_factory.mktemp("svs") / "slide.svs", image, downsamples=(4,)), image


@pytest.mark.parametrize("backend", ["tiffslide", "openslide"])
def test_an_aperio_svs_is_recognised_with_its_mpp(svs: tuple[Path, np.ndarray], backend: str) -> None:
    with open_slide(svs[0], backend) as slide:
        assert slide.info.vendor == "aperio"
        assert [lv.pixel_size for lv in slide.levels.levels] == [PixelSize(0.25, 0.25, "um"), PixelSize(1, 1, "um")]


@pytest.mark.parametrize("backend", ["tiffslide", "openslide"])
def test_a_region_of_a_level_reads_as_stored_up_to_jpeg(svs: tuple[Path, np.ndarray], backend: str) -> None:
    path, image = svs
    with open_slide(path, backend) as slide:
        region = slide.read(1, Region(10, 74, 20, 100))
    expected = np.moveaxis(image[::4, ::4][10:74, 20:100], -1, 0).astype(float)
    assert region.shape == (3, 64, 80)
    assert np.abs(region - expected).mean() < 8  # JPEG at quality 90


def test_both_backends_read_the_same_pixels(svs: tuple[Path, np.ndarray]) -> None:
    with open_slide(svs[0], "tiffslide") as a, open_slide(svs[0], "openslide") as b:
        np.testing.assert_array_equal(a.read(0, Region(100, 200, 300, 400)), b.read(0, Region(100, 200, 300, 400)))


def test_mrxs_goes_to_openslide_and_svs_to_tiffslide() -> None:
    backends = (backend_for("s.mrxs"), backend_for("s.svs"), backend_for("s.NDPI"))
    assert backends == ("openslide", "tiffslide", "tiffslide")


def test_a_missing_library_names_the_extra(svs: tuple[Path, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openslide", None)  # what Python sees when the package is not installed
    with pytest.raises(ConfigError, match=r"slide.svs: reading this slide needs openslide.*segpipe\[wsi\]"):
        open_slide(svs[0], "openslide")


def test_a_file_that_is_not_a_slide_is_one_input_error(tmp_path: Path) -> None:
    (tmp_path / "broken.svs").write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="broken.svs: not a readable slide"):
        open_slide(tmp_path / "broken.svs")
    (tmp_path / "broken.mrxs").write_bytes(b"not a slide")
    with pytest.raises(InputError, match="broken.mrxs: not a slide format OpenSlide knows"):
        open_slide(tmp_path / "broken.mrxs")


def test_a_region_outside_the_level_is_refused(svs: tuple[Path, np.ndarray]) -> None:
    with open_slide(svs[0]) as slide, pytest.raises(InputError, match="not inside level 1"):
        slide.read(1, Region(0, 300, 0, 10))


def test_an_svs_on_s3_reads_through_tiffslide_and_its_levels_through_tifffile(
    svs: tuple[Path, np.ndarray], s3_bucket: str
) -> None:
    url = f"{s3_bucket}/slides/slide.svs"
    location(url).write_bytes(svs[0].read_bytes())
    with open_slide(url) as remote, open_slide(svs[0]) as local:
        np.testing.assert_array_equal(remote.read(1, Region(0, 64, 0, 64)), local.read(1, Region(0, 64, 0, 64)))
    assert read_levels(open_image(url)).levels[1].pixel_size == PixelSize(1.0, 1.0, "um")


def test_openslide_refuses_a_remote_slide(s3_bucket: str) -> None:
    url = f"{s3_bucket}/slides/s.mrxs"
    location(url).write_bytes(b"x")
    with pytest.raises(InputError, match="OpenSlide reads local files only"):
        open_slide(url)
