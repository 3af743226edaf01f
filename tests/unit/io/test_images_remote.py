"""TIFF and Zarr inputs on an object store (a real moto S3 server) and in ``memory://`` read exactly like the
same files on disk, tile by tile, with the same one-line errors (segpipe/io/images.py over segpipe/storage)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from segpipe.errors import InputError
from segpipe.io.images import ImageSource, _open_tiff, close_images, open_image, read_metadata
from segpipe.storage import create_array, location

RNG = np.random.default_rng(11)

CASES: dict[str, tuple[np.ndarray, dict[str, Any]]] = {
    "tiled-zlib-uint16": (RNG.integers(0, 65535, (70, 90), dtype=np.uint16), {"tile": (32, 32), "compression": "zlib"}),
    "striped-lzw-uint8": (RNG.integers(0, 255, (53, 61), dtype=np.uint8), {"rowsperstrip": 7, "compression": "lzw"}),
    "tiled-zstd-bigtiff-float32": (
        RNG.normal(size=(50, 75)).astype(np.float32),
        {"tile": (16, 16), "compression": "zstd", "bigtiff": True},
    ),
    "rgb-interleaved-tiled": (
        RNG.integers(0, 255, (40, 50, 3), dtype=np.uint8),
        {"photometric": "rgb", "tile": (16, 16), "compression": "zlib"},
    ),
    "planar-3-band": (
        RNG.integers(0, 4000, (3, 37, 45), dtype=np.uint16),
        {"photometric": "minisblack", "planarconfig": "separate", "tile": (16, 16)},
    ),
}


def _upload(local: Path, url: str) -> str:
    location(url).write_bytes(local.read_bytes())
    return url


@pytest.fixture(scope="module", params=sorted(CASES))
def case_file(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data, options = CASES[request.param]
    path = tmp_path_factory.mktemp("tiff") / f"{request.param}.tif"
    tifffile.imwrite(path, data, **options)
    return path


@pytest.fixture(params=["memory", "s3"])
def remote_root(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://segpipe-images-{RNG.integers(1 << 60)}"
    return str(request.getfixturevalue("s3_bucket"))


def test_tiff_on_a_store_reads_like_the_local_file(case_file: Path, remote_root: str) -> None:
    local = open_image(case_file)
    remote = open_image(_upload(case_file, f"{remote_root}/in/{case_file.name}"))
    assert remote.path == f"{remote_root}/in/{case_file.name}"
    assert remote.kind == "tiff"
    assert (remote.stored_axes, remote.shape, remote.dtype) == (local.stored_axes, local.shape, local.dtype)
    whole = local.read(0, local.height, 0, local.width)
    np.testing.assert_array_equal(remote.read(0, remote.height, 0, remote.width), whole)
    h, w = local.height, local.width
    regions = [(0, 1, 0, 1), (h // 3, h, w // 2, w), (5, 21, 3, 40), (h - 1, h, w - 1, w)]
    for _ in range(12):  # and seeded random ones
        y0, x0 = int(RNG.integers(0, h)), int(RNG.integers(0, w))
        regions.append((y0, int(RNG.integers(y0 + 1, h + 1)), x0, int(RNG.integers(x0 + 1, w + 1))))
    for y0, y1, x0, x1 in regions:
        np.testing.assert_array_equal(remote.read(y0, y1, x0, x1), whole[:, y0:y1, x0:x1])
    clone: ImageSource = pickle.loads(pickle.dumps(remote))
    np.testing.assert_array_equal(clone.read(1, 9, 2, 7), whole[:, 1:9, 2:7])


def test_a_tile_is_read_without_downloading_the_file(s3_bucket: str, tmp_path: Path) -> None:
    """A 16 MiB tiled TIFF: reading one tile fetches its header and that tile's block, not the whole file."""
    pixels = RNG.integers(0, 65535, (2048, 4096), dtype=np.uint16)  # incompressible
    tifffile.imwrite(tmp_path / "big.tif", pixels, tile=(256, 256))
    source = open_image(_upload(tmp_path / "big.tif", f"{s3_bucket}/big.tif"))
    close_images()
    np.testing.assert_array_equal(source.read(1024, 1280, 2048, 2304)[0], pixels[1024:1280, 2048:2304])
    fetched = _open_tiff(source).file.cache.total_requested_bytes  # type: ignore[attr-defined]
    assert 0 < fetched < 4 * 2**20, fetched
    np.testing.assert_array_equal(source.read(1100, 1300, 2100, 2400)[0], pixels[1100:1300, 2100:2400])


def test_a_zarr_input_on_s3_reads_through_its_store(s3_bucket: str) -> None:
    data = RNG.integers(0, 1000, (2, 33, 47), dtype=np.int32)
    array = create_array(f"{s3_bucket}/in.zarr", shape=data.shape, chunks=(1, 10, 7), dtype=data.dtype)
    array[:] = data
    source = open_image(f"{s3_bucket}/in.zarr")
    assert (source.kind, source.stored_axes, source.shape) == ("zarr", "CYX", (2, 33, 47))
    np.testing.assert_array_equal(source.read(0, 33, 0, 47), data)
    np.testing.assert_array_equal(source.read(11, 30, 6, 41), data[:, 11:30, 6:41])


def test_ome_pixel_size_is_read_from_s3(s3_bucket: str, tmp_path: Path) -> None:
    tifffile.imwrite(
        tmp_path / "cells.ome.tif",
        RNG.integers(0, 255, (1, 40, 40), dtype=np.uint8),
        metadata={"axes": "CYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25, "PhysicalSizeXUnit": "µm"},
    )
    local = read_metadata(open_image(tmp_path / "cells.ome.tif"))
    remote = read_metadata(open_image(_upload(tmp_path / "cells.ome.tif", f"{s3_bucket}/cells.ome.tif")))
    assert remote == local
    assert remote["pixel_size"] == [0.25, 0.25]
    assert remote["unit"] == "micrometer"


def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("missing.tif", None, "no such file or directory"),
        ("empty.tif", b"", "file is empty"),
        ("notes.tif", b"these are my notes, not an image\n", "not a readable TIFF"),
        ("cut.tif", "cut", "truncated"),
        ("folder.zarr/readme.txt", b"not zarr", "not a readable Zarr"),
    ],
)
def test_s3_errors_name_the_url_in_one_line(
    s3_bucket: str, tmp_path: Path, name: str, content: bytes | str | None, fragment: str
) -> None:
    if content == "cut":
        tifffile.imwrite(tmp_path / "c.tif", RNG.integers(0, 255, (300, 300), dtype=np.uint16), tile=(32, 32))
        content = _cut((tmp_path / "c.tif").read_bytes())
    if isinstance(content, bytes):
        location(f"{s3_bucket}/{name}").write_bytes(content)
    url = f"{s3_bucket}/{name.split('/')[0]}"
    with pytest.raises(InputError) as info:
        open_image(url)
    message = str(info.value)
    assert message.startswith(f"{url}: ")
    assert fragment in message
    assert "\n" not in message


def test_an_object_deleted_after_opening_is_no_such_file(s3_bucket: str, tmp_path: Path) -> None:
    pixels, options = CASES["tiled-zlib-uint16"]
    tifffile.imwrite(tmp_path / "t.tif", pixels, **options)
    source = open_image(_upload(tmp_path / "t.tif", f"{s3_bucket}/gone.tif"))
    close_images()
    location(source.path).remove()
    with pytest.raises(InputError, match="no such file or directory"):
        source.read(0, 4, 0, 4)
