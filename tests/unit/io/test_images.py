"""Opening TIFF/BigTIFF and Zarr images and reading them region by region (segpipe/io/images.py)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from segpipe.errors import InputError
from segpipe.io.images import ImageSource, open_image

from ..helpers import write_zarr

RNG = np.random.default_rng(42)


def _pixels(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        return RNG.normal(100.0, 30.0, shape).astype(dtype)
    return RNG.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


# name: (stored array, tifffile.imwrite options, expected (C, Y, X) view)
TIFF_CASES: dict[str, tuple[np.ndarray, dict[str, Any], str]] = {
    "tiled-zlib-uint16": (_pixels("uint16", (70, 90)), {"tile": (32, 32), "compression": "zlib"}, "YX"),
    "striped-lzw-uint8": (_pixels("uint8", (53, 61)), {"rowsperstrip": 7, "compression": "lzw"}, "YX"),
    "striped-deflate-float32": (
        _pixels("float32", (45, 33)),
        {"rowsperstrip": 4, "compression": "deflate"},
        "YX",
    ),
    "tiled-zstd-bigtiff-uint16": (
        _pixels("uint16", (50, 75)),
        {"tile": (16, 16), "compression": "zstd", "bigtiff": True},
        "YX",
    ),
    "striped-bigtiff-float32": (_pixels("float32", (31, 29)), {"bigtiff": True}, "YX"),
    "tiled-uint8-single-row": (_pixels("uint8", (1, 40)), {"tile": (16, 16)}, "YX"),
    "singleton-axes-uint16": (_pixels("uint16", (1, 1, 20, 30)), {}, "11YX"),
    "rgb-interleaved-uint8": (_pixels("uint8", (40, 50, 3)), {"photometric": "rgb"}, "YXC"),
    "rgb-interleaved-tiled-zlib-uint16": (
        _pixels("uint16", (40, 50, 3)),
        {"photometric": "rgb", "tile": (16, 16), "compression": "zlib"},
        "YXC",
    ),
    "planar-4-band-float32": (
        _pixels("float32", (4, 40, 50)),
        {"photometric": "minisblack", "planarconfig": "separate"},
        "CYX",
    ),
    "planar-4-band-tiled-lzw-uint16": (
        _pixels("uint16", (4, 37, 45)),
        {"photometric": "minisblack", "planarconfig": "separate", "tile": (16, 16), "compression": "lzw"},
        "CYX",
    ),
}


def _as_cyx(stored: np.ndarray, axes: str) -> np.ndarray:
    if axes == "YXC":
        return np.moveaxis(stored, -1, 0)
    if axes == "CYX":
        return stored
    return stored.reshape(1, *stored.shape[-2:])


@pytest.fixture(scope="module", params=sorted(TIFF_CASES))
def tiff_case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    stored, options, axes = TIFF_CASES[request.param]
    path = tmp_path_factory.mktemp("tiff") / f"{request.param}.tif"
    tifffile.imwrite(path, stored, **options)
    return open_image(path), _as_cyx(stored, axes), axes


def test_open_image_describes_tiff_as_cyx(tiff_case) -> None:
    source, expected, axes = tiff_case
    assert source.kind == "tiff"
    assert source.shape == expected.shape
    assert np.dtype(source.dtype) == expected.dtype
    assert source.stored_axes == axes
    assert (source.channels, source.height, source.width) == expected.shape


def test_read_whole_tiff_equals_written_pixels(tiff_case) -> None:
    source, expected, _ = tiff_case
    out = source.read(0, source.height, 0, source.width)
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)


@settings(deadline=None, max_examples=25)
@given(st.data())
def test_read_region_equals_numpy_slicing(tiff_case, data: st.DataObject) -> None:
    source, expected, _ = tiff_case
    y0 = data.draw(st.integers(0, source.height - 1))
    y1 = data.draw(st.integers(y0 + 1, source.height))
    x0 = data.draw(st.integers(0, source.width - 1))
    x1 = data.draw(st.integers(x0 + 1, source.width))
    np.testing.assert_array_equal(source.read(y0, y1, x0, x1), expected[:, y0:y1, x0:x1])


def test_image_source_is_picklable(tiff_case) -> None:
    source, expected, _ = tiff_case
    clone = pickle.loads(pickle.dumps(source))
    assert clone == source
    np.testing.assert_array_equal(clone.read(0, 2, 0, 3), expected[:, :2, :3])


@pytest.mark.parametrize(
    ("shape", "chunks", "dtype"),
    [
        ((33, 47), (10, 7), "uint16"),
        ((3, 20, 31), (3, 8, 8), "float32"),
        ((1, 1), (1, 1), "uint8"),
        ((2, 9, 5), (1, 4, 4), "int16"),
    ],
)
def test_zarr_arrays_2d_and_3d(tmp_path: Path, shape, chunks, dtype) -> None:
    data = _pixels(dtype, shape) if dtype != "int16" else RNG.integers(-500, 500, shape).astype(dtype)
    source = write_zarr(tmp_path / "a.zarr", data, chunks)
    cyx = data if data.ndim == 3 else data[np.newaxis]
    assert source.kind == "zarr"
    assert source.shape == cyx.shape
    assert np.dtype(source.dtype) == data.dtype
    np.testing.assert_array_equal(source.read(0, cyx.shape[1], 0, cyx.shape[2]), cyx)
    h, w = cyx.shape[1:]
    np.testing.assert_array_equal(source.read(h // 3, h, w // 2, w), cyx[:, h // 3 :, w // 2 :])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_zarr_image_remembers_its_format_and_reads_through_it(tmp_path: Path, zarr_format: int) -> None:
    """Knowing the format, later opens read only that format's metadata (on S3: 2 requests instead of 6)."""
    data = _pixels("uint16", (3, 20, 31))
    zarr.create_array(tmp_path / "a.zarr", data=data, chunks=(3, 8, 8), zarr_format=zarr_format)  # type: ignore[arg-type]
    source = open_image(tmp_path / "a.zarr")
    assert source.zarr_format == zarr_format
    np.testing.assert_array_equal(source.read(2, 19, 5, 30), data[:, 2:19, 5:30])
    np.testing.assert_array_equal(source.read(2, 19, 5, 30, stored=source.stored_array()), data[:, 2:19, 5:30])


# -- errors: every one is an InputError whose message names the path -------------------------------------


def _write_truncated(path: Path, **options: Any) -> None:
    tifffile.imwrite(path, _pixels("uint16", (70, 90)), **options)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


def _missing(path: Path) -> Path:
    return path / "nope.tif"


def _empty(path: Path) -> Path:
    (path / "empty.tif").write_bytes(b"")
    return path / "empty.tif"


def _text(path: Path) -> Path:
    (path / "notes.tif").write_text("these are my notes, not an image\n")
    return path / "notes.tif"


def _truncated_large_strip(path: Path) -> Path:
    tifffile.imwrite(path / "cut.tif", _pixels("uint16", (300, 300)))
    content = (path / "cut.tif").read_bytes()
    (path / "cut.tif").write_bytes(content[: len(content) // 2])
    return path / "cut.tif"


def _complex(path: Path) -> Path:
    tifffile.imwrite(path / "c.tif", (RNG.random((20, 20)) + 1j).astype(np.complex64))
    return path / "c.tif"


def _complex_zarr(path: Path) -> Path:
    zarr.create_array(path / "c.zarr", shape=(10, 10), dtype="complex64")
    return path / "c.zarr"


def _zstack(path: Path) -> Path:
    tifffile.imwrite(path / "z.tif", _pixels("uint16", (5, 20, 20)), metadata={"axes": "ZYX"})
    return path / "z.tif"


def _tzyx(path: Path) -> Path:
    tifffile.imwrite(path / "tz.tif", _pixels("uint8", (2, 3, 20, 20)), metadata={"axes": "TZYX"})
    return path / "tz.tif"


def _4d_plain(path: Path) -> Path:
    tifffile.imwrite(path / "q.tif", _pixels("float32", (2, 3, 16, 16)))
    return path / "q.tif"


def _zero_size_zarr(path: Path) -> Path:
    zarr.create_array(path / "zero.zarr", shape=(0, 10), dtype="uint8")
    return path / "zero.zarr"


def _4d_zarr(path: Path) -> Path:
    zarr.create_array(path / "four.zarr", shape=(2, 3, 10, 10), dtype="uint8")
    return path / "four.zarr"


def _plain_dir(path: Path) -> Path:
    (path / "folder.zarr").mkdir()
    (path / "folder.zarr" / "readme.txt").write_text("not zarr")
    return path / "folder.zarr"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (_missing, "no such file"),
        (_empty, "empty"),
        (_text, "not a readable TIFF"),
        (_truncated_large_strip, "truncated"),
        (_complex, "complex64"),
        (_complex_zarr, "complex64"),
        (_tzyx, "TZYX"),
        (_4d_plain, "axes"),
        (_zero_size_zarr, "zero-size"),
        (_4d_zarr, "4 dimensions"),
        (_plain_dir, "not a readable Zarr"),
    ],
    ids=lambda v: getattr(v, "__name__", v).strip("_") if callable(v) else None,
)
def test_open_image_errors_name_the_path(tmp_path: Path, make, fragment: str) -> None:
    path = make(tmp_path)
    with pytest.raises(InputError) as info:
        open_image(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert fragment in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "options",
    [
        {"tile": (32, 32), "compression": "zlib"},
        {"rowsperstrip": 7, "compression": "lzw"},
        {"tile": (16, 16), "compression": "zstd", "bigtiff": True},
        {"rowsperstrip": 8},
    ],
    ids=["tiled-zlib", "striped-lzw", "tiled-zstd-bigtiff", "striped-raw"],
)
def test_truncated_tiff_is_refused_by_open_image(tmp_path: Path, options: dict[str, Any]) -> None:
    """Regression: a TIFF cut short after its first strip/tile used to pass open_image's one-pixel probe."""
    path = tmp_path / "half.tif"
    _write_truncated(path, **options)
    with pytest.raises(InputError, match="truncated") as info:
        open_image(path)
    assert str(info.value).startswith(str(path))


def test_read_of_a_file_damaged_after_opening_raises_input_error(tmp_path: Path) -> None:
    """A region that cannot be decoded on a worker is an InputError naming the file and the region."""
    path = tmp_path / "later.tif"
    tifffile.imwrite(path, _pixels("uint16", (64, 64)), tile=(16, 16), compression="zlib")
    source = open_image(path)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[-1], page.databytecounts[-1]  # the bottom-right tile
    content = bytearray(path.read_bytes())
    content[offset : offset + count] = b"\xff" * count
    path.write_bytes(bytes(content))
    np.testing.assert_array_equal(source.read(0, 16, 0, 16).shape, (1, 16, 16))  # other tiles still read
    with pytest.raises(InputError) as info:
        source.read(40, 64, 40, 64)
    assert str(info.value).startswith(str(path))
    assert "y 40..64, x 40..64" in str(info.value)


def test_read_of_a_band_first_zarr_keeps_band_order(tmp_path: Path) -> None:
    data = np.stack([np.full((5, 6), band, np.uint8) for band in range(3)])
    source: ImageSource = write_zarr(tmp_path / "bands.zarr", data, (1, 2, 2))
    assert [int(b[0, 0]) for b in source.read(1, 4, 2, 5)] == [0, 1, 2]


def test_a_z_stack_is_read_plane_by_plane(tmp_path: Path) -> None:
    path = _zstack(tmp_path)
    data = tifffile.imread(path)
    stack = open_image(path)
    assert (stack.planes, stack.plane_axis, stack.shape) == (5, "z", (1, 20, 20))
    with pytest.raises(InputError, match="one plane at a time"):
        stack.read(0, 20, 0, 20)
    planes = stack.plane_sources()
    assert [p.plane for p in planes] == [0, 1, 2, 3, 4]
    for index, plane in enumerate(planes):
        np.testing.assert_array_equal(plane.read(3, 17, 2, 19)[0], data[index, 3:17, 2:19])
