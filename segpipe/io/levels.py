"""The resolution levels of an input and each level's physical pixel size, and the choice of the level to read.

Levels come from TIFF pyramids as tifffile assembles them (OME-TIFF SubIFDs, SVS and NDPI levels, GeoTIFF
overviews, generic reduced-resolution pages) and from OME-Zarr ``multiscales``; a plain Zarr array has one.
The pixel size of level 0 is read, in order, from OME ``PhysicalSizeX/Y`` (with their units), the Aperio
``MPP = ...`` of an SVS description, the GeoTIFF pixel scale or transformation (in the CRS's unit: metres for
a projected CRS, degrees for a geographic one), the TIFF resolution tags in centimetres or inches, or the NGFF
``scale`` of a dataset with its axes' units; a file that declares none has ``pixel_size`` None. Levels above
0 are level 0's pixel size times their downsample factor (NGFF datasets: their own scale).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

import tifffile

from segpipe.errors import ConfigError, InputError
from segpipe.io.images import ImageSource, open_image
from segpipe.storage import location, open_array, open_group
from segpipe.units import PixelSize, convert, pixel_size

SVS_MPP = re.compile(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)")
RESOLUTION_UNITS = {2: "inch", 3: "cm"}  # TIFF ResolutionUnit; 1 (none) declares no size
INCH_IN_UM = 25400.0
GEO_LINEAR_UNITS = {9001: 1.0, 9002: 0.3048, 9003: 1200 / 3937, 9036: 1000.0}  # EPSG unit code: metres per unit


@dataclass(frozen=True)
class Level:
    """One stored resolution of an image.

    Attributes:
        index: 0 for full resolution, then coarser.
        shape: (C, Y, X) of the level.
        downsample: level-0 pixels per pixel of this level, (y, x).
        pixel_size: the physical size of one pixel, or None when the file declares none.
    """

    index: int
    shape: tuple[int, int, int]
    downsample: tuple[float, float]
    pixel_size: PixelSize | None


@dataclass(frozen=True)
class ImageLevels:
    """Every stored level of one image, finest first."""

    path: str
    levels: tuple[Level, ...]

    @property
    def base(self) -> Level:
        """Level 0 (full resolution)."""
        return self.levels[0]

    @property
    def pixel_size(self) -> PixelSize | None:
        """Level 0's pixel size."""
        return self.base.pixel_size

    def level(self, index: int) -> Level:
        """The level ``index`` (as ``--level N`` names it).

        Raises:
            ConfigError: no such level.
        """
        if not 0 <= index < len(self.levels):
            raise ConfigError(f"{self.path}: level {index} does not exist (levels 0..{len(self.levels) - 1})")
        return self.levels[index]

    def with_pixel_size(self, size: PixelSize) -> ImageLevels:
        """The same levels with level 0's pixel size set to ``size`` (``--pixel-size``), the others scaled."""
        return replace(self, levels=tuple(replace(lv, pixel_size=size.scaled(*lv.downsample)) for lv in self.levels))


def read_levels(source: ImageSource) -> ImageLevels:
    """The levels of an opened image and their pixel sizes; reads headers only.

    Raises:
        InputError: a level cannot be read (a corrupt pyramid) or a Zarr level is not an array.
    """
    if source.kind == "tiff":
        return _tiff_levels(source)
    return _zarr_levels(source)


def level_source(source: ImageSource, levels: ImageLevels, index: int) -> ImageSource:
    """The ImageSource that reads level ``index`` of ``source`` (``source`` itself for 0).

    Raises:
        ConfigError: no such level.
    """
    level = levels.level(index)
    if index == 0:
        return source
    if source.kind == "tiff":
        return replace(source, level=index, shape=level.shape)
    return open_image(_zarr_datasets(source)[0][index])


# -- TIFF ------------------------------------------------------------------------------------------------


def _tiff_levels(source: ImageSource) -> ImageLevels:
    where = location(source.path)
    try:
        with where.open("rb") as handle, tifffile.TiffFile(handle, name=where.name) as tif:
            series = tif.series[0]
            base = _tiff_pixel_size(source.path, tif)
            shapes = [_yx(source.path, level.axes, level.shape) for level in series.levels]
    except (tifffile.TiffFileError, ValueError, IndexError, KeyError) as exc:
        raise InputError(f"{source.path}: the TIFF's resolution levels cannot be read ({exc})") from None
    levels = []
    for index, (height, width) in enumerate(shapes):
        down = (source.height / height, source.width / width)
        size = base.scaled(*down) if base is not None else None
        levels.append(Level(index, (source.channels, height, width), down, size))
    return ImageLevels(source.path, tuple(levels))


def _yx(path: str, axes: str, shape: tuple[int, ...]) -> tuple[int, int]:
    dims = dict(zip(axes, shape, strict=True))
    if min(dims.get("Y", 0), dims.get("X", 0)) <= 0:
        raise InputError(f"{path}: a resolution level has axes {axes!r} of shape {shape}")
    return dims["Y"], dims["X"]


def _tiff_pixel_size(path: str, tif: tifffile.TiffFile) -> PixelSize | None:
    page = tif.pages.first
    what = f"{path}: declared pixel size"
    if tif.is_ome and tif.ome_metadata:
        found = _ome_pixel_size(tif.ome_metadata, what)
        if found is not None:
            return found
    match = SVS_MPP.search(page.description or "") if tif.is_svs else None
    if match:
        mpp = float(match.group(1))
        return pixel_size(mpp, mpp, "um", what)
    geo = _geotiff_pixel_size(page, what)
    if geo is not None:
        return geo
    return _resolution_pixel_size(page, what)


def _ome_pixel_size(xml: str, what: str) -> PixelSize | None:
    images = tifffile.xml2dict(xml).get("OME", {}).get("Image", {})
    pixels = (images[0] if isinstance(images, list) else images).get("Pixels", {})
    if "PhysicalSizeX" not in pixels:
        return None
    size_x = float(pixels["PhysicalSizeX"])
    size_y = float(pixels.get("PhysicalSizeY", size_x))
    unit_x = str(pixels.get("PhysicalSizeXUnit", "µm"))
    size_y = convert(size_y, str(pixels.get("PhysicalSizeYUnit", unit_x)), unit_x, what)
    return pixel_size(size_y, size_x, unit_x, what)


def _geotiff_pixel_size(page: Any, what: str) -> PixelSize | None:
    tags = page.tags
    scale, matrix = tags.get(33550), tags.get(34264)
    if scale is not None:
        size_x, size_y = float(scale.value[0]), float(scale.value[1])
    elif matrix is not None:
        m = [float(v) for v in matrix.value]
        size_x, size_y = math.hypot(m[0], m[4]), math.hypot(m[1], m[5])
    else:
        return None
    keys = _geokeys(tags.get(34735))
    if keys.get(1024) == 2:  # a geographic CRS: degrees (GeogAngularUnitsGeoKey 9102 is the only one used)
        return pixel_size(size_y, size_x, "deg", what)
    metres = GEO_LINEAR_UNITS.get(keys.get(3076, 9001))
    if metres is None:
        raise InputError(f"{what}: GeoTIFF linear unit EPSG:{keys[3076]} is not supported")
    return pixel_size(size_y * metres, size_x * metres, "m", what)


def _geokeys(tag: Any) -> dict[int, int]:
    """The short-valued keys of a GeoKeyDirectoryTag (key -> value)."""
    if tag is None:
        return {}
    values = [int(v) for v in tag.value]
    entries = [values[i : i + 4] for i in range(4, 4 + 4 * values[3], 4)]
    return {key: value for key, where, _, value in entries if where == 0}


def _resolution_pixel_size(page: Any, what: str) -> PixelSize | None:
    unit = RESOLUTION_UNITS.get(int(page.tags.valueof(296, 1)))
    x_res, y_res = page.tags.valueof(282), page.tags.valueof(283)
    if unit is None or not x_res or not y_res:
        return None
    per_x, per_y = x_res[0] / x_res[1], y_res[0] / y_res[1]
    if per_x <= 0 or per_y <= 0:
        return None
    if unit == "inch":
        return pixel_size(INCH_IN_UM / per_y, INCH_IN_UM / per_x, "um", what)
    return pixel_size(1 / per_y, 1 / per_x, "cm", what).to("um")


# -- Zarr and OME-Zarr --------------------------------------------------------------------------------------


def _zarr_levels(source: ImageSource) -> ImageLevels:
    datasets, scales, unit = _zarr_datasets(source)
    if not datasets:
        return ImageLevels(source.path, (Level(0, source.shape, (1.0, 1.0), None),))
    levels = []
    for index, (url, scale) in enumerate(zip(datasets, scales, strict=True)):
        try:
            array = open_array(url, mode="r")
        except Exception as exc:  # zarr raises many types for a missing or bad array
            raise InputError(f"{url}: OME-Zarr level {index} is not a readable Zarr array ({exc})") from None
        height, width = int(array.shape[-2]), int(array.shape[-1])
        down = (scale[0] / scales[0][0], scale[1] / scales[0][1])
        size = pixel_size(scale[0], scale[1], unit, f"{url}: NGFF scale") if unit else None
        levels.append(Level(index, (source.channels, height, width), down, size))
    return ImageLevels(source.path, tuple(levels))


def _zarr_datasets(source: ImageSource) -> tuple[list[str], list[tuple[float, float]], str | None]:
    """The URLs of the multiscale datasets ``source`` is one of, their (y, x) scales and the axes' unit."""
    where = location(source.path)
    parent = where.parent
    if parent == where:
        return [], [], None
    try:
        attrs: dict[str, Any] = dict(open_group(parent.url, mode="r").attrs)
    except Exception:  # no group above the array: a plain Zarr array
        return [], [], None
    multiscales = attrs.get("ome", {}).get("multiscales") or attrs.get("multiscales")
    if not multiscales:
        return [], [], None
    found = multiscales[0]
    names = [str(axis["name"] if isinstance(axis, dict) else axis).lower() for axis in found.get("axes", [])]
    if where.name not in [d.get("path") for d in found.get("datasets", [])] or "y" not in names or "x" not in names:
        return [], [], None
    y, x = names.index("y"), names.index("x")
    outer = _scale(found.get("coordinateTransformations", []), len(names))
    scales = []
    for dataset in found["datasets"]:
        inner = _scale(dataset.get("coordinateTransformations", []), len(names))
        scales.append((inner[y] * outer[y], inner[x] * outer[x]))
    axes = found.get("axes", [])
    unit = axes[x].get("unit") if isinstance(axes[x], dict) else None
    return [parent.child(d["path"]).url for d in found["datasets"]], scales, unit


def _scale(transforms: list[dict[str, Any]], ndim: int) -> list[float]:
    for transform in transforms:
        if transform.get("type") == "scale":
            return [float(v) for v in transform["scale"]]
    return [1.0] * ndim


__all__ = ["ImageLevels", "Level", "level_source", "read_levels"]
