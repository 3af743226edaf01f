"""Whole-slide images through the slide libraries: tiffslide for the TIFF-based formats, OpenSlide for the rest.

SVS, NDPI, SCN, BIF and generic pyramidal TIFF are read by tiffslide (tifffile underneath), through a file
handle from ``segpipe.storage``, so ``s3://`` slides are read by range requests as TIFFs are. MRXS and VMS
(several files per slide) are read by OpenSlide, from local disk only. Both libraries come with the optional
extra ``segpipe[wsi]``; without it, opening a slide is one ConfigError naming the extra.

A ``Slide`` gives the slide's levels (with the vendor's microns per pixel) and reads a region of any level as
(C, h, w) RGB ``uint8``, in that level's own pixel coordinates.
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

import numpy as np

from segpipe.errors import ConfigError, InputError
from segpipe.io.levels import ImageLevels, Level
from segpipe.storage import Location, location
from segpipe.tiling import Region
from segpipe.units import PixelSize, pixel_size

WSI_EXTRA = "pip install 'segpipe[wsi]'"
OPENSLIDE_SUFFIXES = (".mrxs", ".vms", ".vmu")
BACKENDS = ("tiffslide", "openslide")


@dataclass(frozen=True)
class SlideInfo:
    """What a slide library says about a slide.

    Attributes:
        path: the slide's URL.
        backend: ``tiffslide`` or ``openslide``.
        vendor: the format the library recognised (``aperio``, ``hamamatsu``, ``generic-tiff``, ...) or None.
        objective_power: the scanner's objective (``40``) when declared.
        levels: the slide's levels, each with its pixel size in micrometres when the slide declares one.
    """

    path: str
    backend: str
    vendor: str | None
    objective_power: float | None
    levels: ImageLevels


def backend_for(url: str) -> str:
    """``openslide`` for the formats only OpenSlide reads (MRXS, VMS), else ``tiffslide``."""
    return "openslide" if url.lower().endswith(OPENSLIDE_SUFFIXES) else "tiffslide"


class Slide:
    """An open whole-slide image; close it (or use ``with``) to release its file."""

    def __init__(self, url: str | os.PathLike[str] | Location, backend: str | None = None) -> None:
        """Open the slide at ``url`` with ``backend`` (tiffslide or openslide; default: by its format)."""
        where = location(url)
        self.path = where.url
        self.backend = backend or backend_for(self.path)
        if self.backend not in BACKENDS:
            raise ConfigError(f"{self.path}: slide backend {self.backend!r}; use one of {', '.join(BACKENDS)}")
        if not where.exists():
            raise InputError(f"{self.path}: no such file")
        self._file: IO[bytes] | None = None
        self._slide: Any = self._open_tiffslide(where) if self.backend == "tiffslide" else self._open_openslide(where)
        self.info = self._describe()

    def _open_tiffslide(self, where: Location) -> Any:
        tiffslide = _library("tiffslide", self.path)
        self._file = where.open("rb")
        try:
            return tiffslide.TiffSlide(self._file)
        except Exception as exc:  # tifffile and tiffslide raise many types for a file that is not a slide
            self._file.close()
            raise InputError(f"{self.path}: not a readable slide ({type(exc).__name__}: {exc})") from None

    def _open_openslide(self, where: Location) -> Any:
        openslide = _library("openslide", self.path)
        if not where.is_local:
            raise InputError(f"{self.path}: OpenSlide reads local files only; copy the slide (all its files) first")
        try:
            return openslide.OpenSlide(where.path)
        except openslide.OpenSlideUnsupportedFormatError:  # a subclass of OpenSlideError: caught first
            raise InputError(f"{self.path}: not a slide format OpenSlide knows") from None
        except openslide.OpenSlideError as exc:
            raise InputError(f"{self.path}: OpenSlide cannot read the slide ({exc})") from None

    def _describe(self) -> SlideInfo:
        props = self._slide.properties
        prefix = self.backend
        base = _mpp(props.get(f"{prefix}.mpp-y"), props.get(f"{prefix}.mpp-x"), self.path)
        width0, height0 = self._slide.level_dimensions[0]
        levels = []
        for index, (width, height) in enumerate(self._slide.level_dimensions):
            down = (height0 / height, width0 / width)
            size = base.scaled(*down) if base is not None else None
            levels.append(Level(index, (3, int(height), int(width)), down, size))
        power = props.get(f"{prefix}.objective-power")
        return SlideInfo(
            self.path,
            self.backend,
            props.get(f"{prefix}.vendor"),
            float(power) if power else None,
            ImageLevels(self.path, tuple(levels)),
        )

    @property
    def levels(self) -> ImageLevels:
        """The slide's levels (see ``segpipe.io.levels``)."""
        return self.info.levels

    def read(self, level: int, region: Region) -> np.ndarray:
        """RGB pixels of ``region`` (in level ``level``'s coordinates) as a (3, h, w) ``uint8`` array.

        Raises:
            ConfigError: no such level.
            InputError: the region lies outside the level or its tiles cannot be decoded.
        """
        shape = self.levels.level(level).shape
        if region.y0 < 0 or region.x0 < 0 or region.y1 > shape[1] or region.x1 > shape[2] or region.height <= 0:
            raise InputError(f"{self.path}: region {tuple(region)} is not inside level {level} {shape[1:]}")
        try:
            if self.backend == "tiffslide":
                data = np.asarray(self._slide.zarr_group[str(level)][region.y0 : region.y1, region.x0 : region.x1])
            else:
                data = self._read_openslide(level, region)
        except Exception as exc:  # codecs raise many types for a corrupt tile
            raise InputError(f"{self.path}: level {level} at {tuple(region)} cannot be read ({exc})") from None
        return np.moveaxis(data[..., :3], -1, 0)

    def _read_openslide(self, level: int, region: Region) -> np.ndarray:
        down_y, down_x = self.levels.level(level).downsample
        corner = (math.ceil(region.x0 * down_x - 1e-9), math.ceil(region.y0 * down_y - 1e-9))  # level-0 pixels
        rgba = self._slide.read_region(corner, level, (region.width, region.height))
        return np.asarray(rgba.convert("RGB"))

    def close(self) -> None:
        """Release the slide and its file."""
        self._slide.close()
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> Slide:
        """The open slide."""
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """Close the slide."""
        self.close()


def open_slide(url: str | os.PathLike[str] | Location, backend: str | None = None) -> Slide:
    """Open a whole-slide image with ``backend`` (default: by its suffix, see ``backend_for``).

    Raises:
        ConfigError: the slide library is not installed (the message names ``segpipe[wsi]``), or a bad backend.
        InputError: missing file, not a slide, or (OpenSlide) not on local disk.
    """
    return Slide(url, backend)


def _library(name: str, path: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(f"{path}: reading this slide needs {name}, which is not installed ({WSI_EXTRA})") from None


def _mpp(mpp_y: Any, mpp_x: Any, path: str) -> PixelSize | None:
    if mpp_x in (None, "") and mpp_y in (None, ""):
        return None
    size_x = float(mpp_x if mpp_x not in (None, "") else mpp_y)
    size_y = float(mpp_y if mpp_y not in (None, "") else mpp_x)
    return pixel_size(size_y, size_x, "um", f"{path}: the slide's microns per pixel")


__all__ = ["BACKENDS", "OPENSLIDE_SUFFIXES", "WSI_EXTRA", "Slide", "SlideInfo", "backend_for", "open_slide"]
