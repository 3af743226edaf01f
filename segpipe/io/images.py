"""Lazy, region-by-region access to TIFF/BigTIFF and Zarr images.

``open_image`` validates a path and returns an ``ImageSource``: a small, picklable description (path, axes,
shape, dtype) that any Dask worker can use to read one region without loading the whole image. Every image is
seen as (C, Y, X): single-band images get C = 1; YXS (interleaved) and CYX/SYX (planar) bands are moved first.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import tifffile
import zarr

from segpipe.errors import InputError

SUPPORTED_KINDS = ("u", "i", "f", "b")
CHANNEL_AXES = "SCQI"  # tifffile's names for bands/samples; Q and I are "unknown"/"image sequence"
PLANE_AXES = "ZT"  # a stack of 2-D planes, segmented plane by plane
MAX_CHANNELS = 64


@dataclass(frozen=True)
class ImageSource:
    """A validated image on disk, readable one region at a time.

    Attributes:
        path: file (TIFF) or directory (Zarr array) path.
        kind: ``"tiff"`` or ``"zarr"``.
        stored_axes: one letter per stored axis: ``Y``, ``X``, ``C``, ``P`` (the plane axis of a Z or T
            stack) or ``1`` (a singleton that is dropped).
        shape: (C, Y, X) of one plane, as segpipe sees the image.
        dtype: numpy dtype string of the pixels.
        planes: planes in the stack (1 for a 2-D image).
        plane_axis: ``z`` or ``t`` for a stack, else empty.
        plane: the plane this source reads (``None``: not chosen yet, for a stack).
    """

    path: str
    kind: str
    stored_axes: str
    shape: tuple[int, int, int]
    dtype: str
    planes: int = 1
    plane_axis: str = ""
    plane: int | None = None

    def plane_sources(self) -> list[ImageSource]:
        """One source per plane of a stack (``[self]`` for a 2-D image)."""
        if "P" not in self.stored_axes:
            return [self]
        return [replace(self, plane=index) for index in range(self.planes)]

    @property
    def channels(self) -> int:
        return self.shape[0]

    @property
    def height(self) -> int:
        return self.shape[1]

    @property
    def width(self) -> int:
        return self.shape[2]

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Return pixels [y0:y1, x0:x1] of every band as a (C, h, w) array."""
        array, closer = _open_stored_array(self)
        if "P" in self.stored_axes and self.plane is None:
            raise InputError(f"{self.path}: a {self.planes}-plane stack is read one plane at a time")
        fixed: dict[str, int | slice] = {"Y": slice(y0, y1), "X": slice(x0, x1), "C": slice(None), "1": 0}
        fixed["P"] = self.plane or 0
        index = tuple(fixed[a] for a in self.stored_axes)
        try:
            data = np.asarray(array[index])
        except Exception as exc:  # codecs and stores raise many types; all mean "this region is unreadable"
            raise InputError(
                f"{self.path}: pixels at y {y0}..{y1}, x {x0}..{x1} cannot be read ({type(exc).__name__}: {exc})"
            ) from None
        finally:
            closer()
        kept = [a for a in self.stored_axes if a not in "1P"]
        if "C" not in kept:
            return data[np.newaxis]
        return np.moveaxis(data, kept.index("C"), 0)


def open_image(path: str | os.PathLike[str]) -> ImageSource:
    """Validate ``path`` as a TIFF or Zarr image and describe it; reads headers only.

    Raises:
        InputError: missing path, not an image, unsupported axes or dtype, zero-size dimension.
    """
    path = str(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        axes, shape, dtype = _describe_zarr(path)
        kind = "zarr"
    else:
        axes, shape, dtype = _describe_tiff(path)
        kind = "tiff"
    stored_axes = _classify_axes(path, axes, shape)
    dims = dict(zip(stored_axes, shape, strict=True))
    channels = dims.get("C", 1)
    plane_axis = axes[stored_axes.index("P")].lower() if "P" in stored_axes else ""
    source = ImageSource(
        path,
        kind,
        stored_axes,
        (channels, dims["Y"], dims["X"]),
        np.dtype(dtype).str,
        dims.get("P", 1),
        plane_axis,
        0 if plane_axis else None,
    )
    _check_dtype(path, np.dtype(dtype))
    if min(source.shape) <= 0:
        raise InputError(f"{path}: image has a zero-size dimension {source.shape} (C, Y, X)")
    _probe_pixels(source)
    return replace(source, plane=None) if plane_axis else source


def _probe_pixels(source: ImageSource) -> None:
    """Decode one pixel so an unsupported compression or a truncated file fails now, not on a worker."""
    try:
        source.read(0, 1, 0, 1)
    except InputError:
        raise
    except Exception as exc:  # codec and I/O errors come in many types
        raise InputError(f"{source.path}: pixels cannot be decoded ({type(exc).__name__}: {exc})") from None


def _describe_tiff(path: str) -> tuple[str, tuple[int, ...], np.dtype]:
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: file is empty")
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            _check_complete(path, series.pages, os.path.getsize(path))
            return series.axes, tuple(series.shape), series.dtype
    except (tifffile.TiffFileError, ValueError, IndexError, KeyError, struct.error) as exc:
        raise InputError(f"{path}: not a readable TIFF image ({exc})") from None


def _check_complete(path: str, pages: Any, size: int) -> None:
    """Every strip or tile of the image must lie inside the file (a cut-off download fails here)."""
    for page in pages:
        if page is None:
            continue
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False) if n]
        if ends and max(ends) > size:
            raise InputError(f"{path}: file is truncated: pixel data runs to byte {max(ends)} of a {size}-byte file")


def _describe_zarr(path: str) -> tuple[str, tuple[int, ...], np.dtype]:
    try:
        array = zarr.open_array(path, mode="r")
    except Exception as exc:  # zarr raises many types for a bad store; all mean "not an array"
        raise InputError(f"{path}: not a readable Zarr array ({type(exc).__name__}: {exc})") from None
    axes = {2: "YX", 3: "CYX"}.get(array.ndim)
    if axes is None:
        raise InputError(f"{path}: Zarr array has {array.ndim} dimensions; expected 2 (Y, X) or 3 (C, Y, X)")
    return axes, tuple(array.shape), np.dtype(array.dtype)


def _classify_axes(path: str, axes: str, shape: tuple[int, ...]) -> str:
    """Map tifffile/Zarr axis letters to Y, X, C or 1 (a singleton to drop)."""
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"{path}: image has axes {axes!r} of shape {shape}; expected Y and X axes")
    out = []
    for letter, size in zip(axes, shape, strict=True):
        if letter in "YX":
            out.append(letter)
        elif size == 1:
            out.append("1")
        elif letter in CHANNEL_AXES and "C" not in out:
            out.append("C")
        elif letter in PLANE_AXES and "P" not in out:
            out.append("P")
        else:
            raise InputError(
                f"{path}: image has axes {axes!r} of shape {shape}; supported: Y and X, at most one band axis "
                "and at most one Z or T stack axis"
            )
    channels = dict(zip(out, shape, strict=True)).get("C", 1)
    if channels > MAX_CHANNELS:
        raise InputError(f"{path}: {channels} bands on axis 'C'; at most {MAX_CHANNELS} are supported")
    return "".join(out)


def _check_dtype(path: str, dtype: np.dtype) -> None:
    if dtype.kind not in SUPPORTED_KINDS or dtype.itemsize > 8:
        raise InputError(f"{path}: pixel type {dtype} is not supported (use integer or float pixels)")


def _open_stored_array(source: ImageSource) -> tuple[zarr.Array, Callable[[], None]]:
    """The stored array, and a function that closes what opening it opened."""
    if source.kind == "zarr":
        return zarr.open_array(source.path, mode="r"), lambda: None
    try:
        tif = tifffile.TiffFile(source.path)
        store = tif.series[0].aszarr(level=0)

        def close() -> None:
            store.close()
            tif.close()

        return zarr.open_array(store, mode="r"), close
    except (tifffile.TiffFileError, OSError) as exc:
        raise InputError(f"{source.path}: cannot read TIFF pixels ({exc})") from None


GEOTIFF_TAGS = (33550, 33922, 34264, 34735, 34736, 34737)  # pixel scale, tiepoints, transform, geokeys, params
OME_UNITS = {"µm": "micrometer", "um": "micrometer", "nm": "nanometer", "mm": "millimeter", "m": "meter"}


def read_metadata(source: ImageSource) -> dict[str, Any]:
    """Metadata carried through to the outputs: physical pixel size (OME-TIFF), GeoTIFF georeferencing tags.

    Returns ``{"pixel_size": [y, x], "unit": str | None, "geotiff_tags": [[code, dtype, count, value], ...]}``.
    """
    meta: dict[str, Any] = {"pixel_size": [1.0, 1.0], "unit": None, "geotiff_tags": []}
    if source.kind != "tiff":
        return meta
    with tifffile.TiffFile(source.path) as tif:
        if tif.is_ome and tif.ome_metadata:
            meta.update(_ome_pixel_size(tif.ome_metadata))
        tags = tif.pages.first.tags
        meta["geotiff_tags"] = [
            [tag.code, int(tag.dtype), tag.count, list(tag.value) if isinstance(tag.value, tuple) else tag.value]
            for tag in (tags.get(code) for code in GEOTIFF_TAGS)
            if tag is not None
        ]
    return meta


def _ome_pixel_size(xml: str) -> dict[str, Any]:
    pixels = tifffile.xml2dict(xml).get("OME", {}).get("Image", {})
    pixels = (pixels[0] if isinstance(pixels, list) else pixels).get("Pixels", {})
    if "PhysicalSizeX" not in pixels:
        return {}
    size_x = float(pixels["PhysicalSizeX"])
    size_y = float(pixels.get("PhysicalSizeY", size_x))
    unit = str(pixels.get("PhysicalSizeXUnit", "µm"))
    return {"pixel_size": [size_y, size_x], "unit": OME_UNITS.get(unit, unit)}
