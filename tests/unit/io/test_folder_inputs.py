"""A folder is an input: its images (segpipe/storage/listing.py expand_image_args, open_image on a folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from segpipe.errors import InputError
from segpipe.io.images import open_image
from segpipe.storage.listing import expand_image_args, is_image_folder


@pytest.fixture
def incoming(tmp_path: Path) -> Path:
    folder = tmp_path / "incoming"
    folder.mkdir()
    for name in ("b.tif", "a.ome.tiff", "c.svs"):
        tifffile.imwrite(folder / name, np.zeros((8, 8), np.uint8))
    zarr.create_array(folder / "d.zarr", data=np.zeros((8, 8), np.uint8), chunks=(4, 4))
    (folder / "notes.txt").write_text("not an image")
    (folder / ".partial.tif").write_bytes(b"")
    return folder


def test_a_folder_expands_to_the_images_inside_it_sorted(incoming: Path) -> None:
    found = expand_image_args([str(incoming)])
    assert [Path(url).name for url in found] == ["a.ome.tiff", "b.tif", "c.svs", "d.zarr"]


def test_a_zarr_store_without_the_suffix_is_one_input(tmp_path: Path) -> None:
    zarr.create_array(tmp_path / "scene", data=np.zeros((8, 8), np.uint8), chunks=(4, 4))
    assert is_image_folder(str(tmp_path / "scene")) is False
    assert expand_image_args([str(tmp_path / "scene")]) == [str(tmp_path / "scene")]


def test_arguments_keep_their_order_and_globs_expand(incoming: Path) -> None:
    found = expand_image_args([str(incoming / "c.svs"), str(incoming / "*.tif")])
    assert [Path(url).name for url in found] == ["c.svs", "b.tif"]


def test_a_folder_with_no_image_says_so(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("x")
    with pytest.raises(InputError, match="empty: a folder with no image in it"):
        expand_image_args([str(tmp_path / "empty")])


def test_a_glob_matching_nothing_says_so(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"\*.tif: matches no image"):
        expand_image_args([str(tmp_path / "*.tif")])


def test_opening_a_folder_of_images_says_what_it_is(incoming: Path) -> None:
    with pytest.raises(InputError, match=r"incoming: a folder of 4 image\(s\), not a Zarr store"):
        open_image(incoming)


def test_opening_an_empty_folder_says_it_holds_no_image(tmp_path: Path) -> None:
    (tmp_path / "nothing").mkdir()
    with pytest.raises(InputError, match="nothing: a folder with no image in it and not a Zarr store"):
        open_image(tmp_path / "nothing")
