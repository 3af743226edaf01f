"""Lazy, region-by-region access to TIFF/BigTIFF and Zarr images, wherever they are stored.

``open_image`` validates a URL (a local path, ``s3://``, ``gs://``, ``memory://``, ...) and returns an
``ImageSource``: a small, picklable description (URL, axes, shape, dtype) that any Dask worker can use to read
one region without loading the whole image. A TIFF is read through a file handle, tile by tile (range requests
on an object store); a Zarr array through its zarr store. Every image is seen as (C, Y, X): single-band images
get C = 1; YXS (interleaved) and CYX/SYX (planar) bands are moved first.

Each thread keeps its last few TIFFs open (``MAX_OPEN_TIFFS``): a worker parses a file's header once, not once
per chunk. ``close_images`` closes them all (at worker teardown). Transient I/O errors (connection resets,
timeouts) are raised as they are, so callers may retry; missing, forbidden or undecodable data is an InputError.
"""

from __future__ import annotations

import os
import struct
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import IO, Any

import numpy as np
import tifffile
import zarr

from segpipe.errors import InputError
from segpipe.storage import Location, is_transient, location, open_array
from segpipe.storage.listing import ZARR_MARKERS, expand_inputs

SUPPORTED_KINDS = ("u", "i", "f", "b")
CHANNEL_AXES = "SCQI"  # tifffile's names for bands/samples; Q and I are "unknown"/"image sequence"
PLANE_AXES = "ZT"  # a stack of 2-D planes, segmented plane by plane
MAX_CHANNELS = 64
MAX_OPEN_TIFFS = 4  # per thread


@dataclass(frozen=True)
class ImageSource:
    """A validated image, readable one region at a time.

    Attributes:
        path: URL of the file (TIFF) or directory (Zarr array); local paths are absolute. Never credentials.
        kind: ``"tiff"`` or ``"zarr"``.
        stored_axes: one letter per stored axis: ``Y``, ``X``, ``C``, ``P`` (the plane axis of a Z or T
            stack) or ``1`` (a singleton that is dropped).
        shape: (C, Y, X) of one plane, as segpipe sees the image.
        dtype: numpy dtype string of the pixels.
        planes: planes in the stack (1 for a 2-D image).
        plane_axis: ``z`` or ``t`` for a stack, else empty.
        plane: the plane this source reads (``None``: not chosen yet, for a stack).
        version: the TIFF's version (etag or mtime) when opened; a replaced file is not read from a stale handle.
        zarr_format: a Zarr array's format (2 or 3) once known, so that opening it reads only its own metadata.
        level: the pyramid level of a TIFF this source reads (0: full resolution; see ``segpipe.io.levels``).
        bands: the stored bands read, in this order (0-based; ``None``: all); ``shape`` counts only these.
    """

    path: str
    kind: str
    stored_axes: str
    shape: tuple[int, int, int]
    dtype: str
    planes: int = 1
    plane_axis: str = ""
    plane: int | None = None
    version: str = ""
    zarr_format: int | None = None
    level: int = 0
    bands: tuple[int, ...] | None = None

    def plane_sources(self) -> list[ImageSource]:
        """One source per plane of a stack (``[self]`` for a 2-D image)."""
        if "P" not in self.stored_axes:
            return [self]
        return [replace(self, plane=index) for index in range(self.planes)]

    @property
    def channels(self) -> int:
        """Bands (C)."""
        return self.shape[0]

    @property
    def height(self) -> int:
        """Rows (Y)."""
        return self.shape[1]

    @property
    def width(self) -> int:
        """Columns (X)."""
        return self.shape[2]

    def stored_array(self) -> Any:
        """The stored array, opened: pass it to ``read`` to read many regions without opening it each time."""
        return _stored_array(self)

    def read(self, y0: int, y1: int, x0: int, x1: int, stored: Any = None) -> np.ndarray:
        """Return pixels [y0:y1, x0:x1] of every band as a (C, h, w) array.

        Reads from ``stored`` (the array ``stored_array()`` opened) when given, else opens the array.
        """
        if "P" in self.stored_axes and self.plane is None:
            raise InputError(f"{self.path}: a {self.planes}-plane stack is read one plane at a time")
        fixed: dict[str, int | slice] = {"Y": slice(y0, y1), "X": slice(x0, x1), "C": slice(None), "1": 0}
        fixed["P"] = self.plane or 0
        index = tuple(fixed[a] for a in self.stored_axes)
        try:
            data = np.asarray((_stored_array(self) if stored is None else stored)[index])
        except InputError:
            raise
        except Exception as exc:  # codecs and stores raise many types; all but transient I/O mean "unreadable"
            _forget_tiff(self)
            if is_transient(exc):
                raise
            raise InputError(
                f"{self.path}: pixels at y {y0}..{y1}, x {x0}..{x1} cannot be read ({type(exc).__name__}: {exc})"
            ) from None
        kept = [a for a in self.stored_axes if a not in "1P"]
        bands = data[np.newaxis] if "C" not in kept else np.moveaxis(data, kept.index("C"), 0)
        return bands if self.bands is None else bands[list(self.bands)]


def open_image(path: str | os.PathLike[str] | Location) -> ImageSource:
    """Validate ``path`` (a path or URL) as a TIFF or Zarr image and describe it; reads headers only.

    Raises:
        InputError: missing path, not an image, unsupported axes or dtype, zero-size dimension.
    """
    where = location(path)
    url = where.url
    if not where.exists():
        raise InputError(f"{url}: no such file or directory")
    version, zarr_format = "", None
    if where.is_dir():
        axes, shape, dtype, zarr_format = _describe_zarr(where)
        kind = "zarr"
    else:
        axes, shape, dtype, version = _describe_tiff(where)
        kind = "tiff"
    stored_axes = _classify_axes(url, axes, shape)
    dims = dict(zip(stored_axes, shape, strict=True))
    plane_axis = axes[stored_axes.index("P")].lower() if "P" in stored_axes else ""
    source = ImageSource(
        url,
        kind,
        stored_axes,
        (dims.get("C", 1), dims["Y"], dims["X"]),
        np.dtype(dtype).str,
        dims.get("P", 1),
        plane_axis,
        0 if plane_axis else None,
        version,
        zarr_format,
    )
    _check_dtype(url, np.dtype(dtype))
    if min(source.shape) <= 0:
        raise InputError(f"{url}: image has a zero-size dimension {source.shape} (C, Y, X)")
    _probe_pixels(source)
    return replace(source, plane=None) if plane_axis else source


def _probe_pixels(source: ImageSource) -> None:
    """Decode one pixel so an unsupported compression or a truncated file fails now, not on a worker."""
    try:
        source.read(0, 1, 0, 1)
    except InputError:
        raise
    except Exception as exc:  # codec and I/O errors come in many types
        if is_transient(exc):
            raise
        raise InputError(f"{source.path}: pixels cannot be decoded ({type(exc).__name__}: {exc})") from None


def _describe_tiff(where: Location) -> tuple[str, tuple[int, ...], np.dtype, str]:
    """Axes, shape and dtype of the first series, and the file's version; the file must be complete."""
    identity = where.identity()
    if identity.size == 0:
        raise InputError(f"{where.url}: file is empty")
    try:
        with where.open("rb") as handle, tifffile.TiffFile(handle, name=where.name) as tif:
            series = tif.series[0]
            _check_complete(where.url, series.pages, identity.size)
            return series.axes, tuple(series.shape), series.dtype, identity.version
    except InputError:
        raise
    except (tifffile.TiffFileError, ValueError, IndexError, KeyError, struct.error) as exc:
        raise InputError(f"{where.url}: not a readable TIFF image ({exc})") from None


def _check_complete(path: str, pages: Any, size: int) -> None:
    """Every strip or tile of the image must lie inside the file (a cut-off download fails here)."""
    for page in pages:
        if page is None:
            continue
        ends = [o + n for o, n in zip(page.dataoffsets, page.databytecounts, strict=False) if n]
        if ends and max(ends) > size:
            raise InputError(f"{path}: file is truncated: pixel data runs to byte {max(ends)} of a {size}-byte file")


def _check_zarr_store(where: Location) -> None:
    """A folder that is not a Zarr store is a folder of images: say so, not "not a readable Zarr array"."""
    if where.name.lower().endswith(".zarr") or any(where.child(marker).exists() for marker in ZARR_MARKERS):
        return  # meant as a Zarr store: "not a readable Zarr array" says what is wrong
    found = len(expand_inputs(where.url))
    if not found:
        raise InputError(f"{where.url}: a folder with no image in it and not a Zarr store")
    raise InputError(f"{where.url}: a folder of {found} image(s), not a Zarr store: name them (e.g. {where.url}/*.tif)")


def _describe_zarr(where: Location) -> tuple[str, tuple[int, ...], np.dtype, int]:
    try:
        array = open_array(where, mode="r")
    except Exception as exc:  # zarr raises many types for a bad store; all but transient I/O mean "not an array"
        if is_transient(exc):
            raise
        _check_zarr_store(where)
        raise InputError(f"{where.url}: not a readable Zarr array ({type(exc).__name__}: {exc})") from None
    axes = {2: "YX", 3: "CYX"}.get(array.ndim)
    if axes is None:
        raise InputError(f"{where.url}: Zarr array has {array.ndim} dimensions; expected 2 (Y, X) or 3 (C, Y, X)")
    return axes, tuple(array.shape), np.dtype(array.dtype), int(array.metadata.zarr_format)


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


class _OpenTiff:
    """One TIFF opened for reading: its file handle, ``TiffFile`` and level-0 zarr view (used by one thread)."""

    def __init__(self, where: Location, level: int = 0) -> None:
        self.closed = False
        self.file: IO[bytes] = where.open("rb")
        try:
            self.tif = tifffile.TiffFile(self.file, name=where.name)
            self.store = self.tif.series[0].aszarr(level=level, read_only=True)
            self.array = zarr.open_array(self.store, mode="r")
        except BaseException:
            self.file.close()
            raise

    def close(self) -> None:
        """Close the zarr view, the TiffFile and the file (idempotent)."""
        if not self.closed:
            self.closed = True
            self.store.close()
            self.tif.close()
            self.file.close()


_THREAD = threading.local()
_ALL_OPEN: weakref.WeakSet[_OpenTiff] = weakref.WeakSet()
_ALL_LOCK = threading.Lock()


def _thread_tiffs() -> OrderedDict[tuple[str, str, int], _OpenTiff]:
    """This thread's open TIFFs, most recently used last (a forked child starts with none)."""
    if getattr(_THREAD, "pid", None) != os.getpid():
        _THREAD.pid = os.getpid()
        _THREAD.tiffs = OrderedDict()
    tiffs: OrderedDict[tuple[str, str, int], _OpenTiff] = _THREAD.tiffs
    return tiffs


def _open_tiff(source: ImageSource) -> _OpenTiff:
    """This thread's open handle on ``source``'s TIFF, opened on first use.

    The least recently used handle beyond ``MAX_OPEN_TIFFS`` is closed.
    """
    tiffs = _thread_tiffs()
    key = (source.path, source.version, source.level)
    handle = tiffs.get(key)
    if handle is not None and not handle.closed:
        tiffs.move_to_end(key)
        return handle
    handle = _OpenTiff(location(source.path), source.level)
    tiffs[key] = handle
    with _ALL_LOCK:
        _ALL_OPEN.add(handle)
    while len(tiffs) > MAX_OPEN_TIFFS:
        tiffs.popitem(last=False)[1].close()
    return handle


def _forget_tiff(source: ImageSource) -> None:
    """Close this thread's handle on ``source`` after a failed read, so a retry starts from a fresh one."""
    handle = _thread_tiffs().pop((source.path, source.version, source.level), None)
    if handle is not None:
        handle.close()


def close_images() -> int:
    """Close every TIFF this process holds open, in all threads (later reads reopen them); return how many."""
    with _ALL_LOCK:
        handles = [h for h in _ALL_OPEN if not h.closed]
    for handle in handles:
        handle.close()
    return len(handles)


def _stored_array(source: ImageSource) -> Any:
    """The stored array (a zarr array over the TIFF's tiles, or the Zarr input itself)."""
    try:
        if source.kind == "zarr":
            return open_array(source.path, mode="r", zarr_format=source.zarr_format)
        return _open_tiff(source).array
    except FileNotFoundError:
        raise InputError(f"{source.path}: no such file or directory") from None
    except (tifffile.TiffFileError, PermissionError) as exc:
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
    where = location(source.path)
    with where.open("rb") as handle, tifffile.TiffFile(handle, name=where.name) as tif:
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
