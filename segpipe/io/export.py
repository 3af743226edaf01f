"""Export a finished mask as a tiled, compressed (Geo)TIFF, streamed tile by tile from its Zarr array.

GeoTIFF tags of the input (pixel scale, tiepoints or transformation, geokeys) are written unchanged: the mask
has the input's pixel grid, so it lands where the scene was. The TIFF is written to a local file first (TIFF
writing seeks back), then moved or uploaded to its URL atomically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tifffile
import zarr

from segpipe.storage import OWN_FORMAT, Location, location, open_array

TILE = 256
PIXEL_SCALE, TIEPOINTS, TRANSFORMATION = 33550, 33922, 34264


def export_tiff(
    mask_path: str | os.PathLike[str] | Location,
    out_path: str | os.PathLike[str] | Location,
    geotiff_tags: list[list[Any]] | None = None,
    pixel_size: tuple[float, float] | None = None,
) -> str:
    """Write the (Y, X) label array at URL ``mask_path`` to URL ``out_path`` as a tiled, deflate-compressed TIFF.

    Returns:
        The output URL.
    """
    mask = open_array(mask_path, mode="r", zarr_format=OWN_FORMAT)
    extratags = [
        (code, dtype, count, tuple(value) if isinstance(value, list) else value, True)
        for code, dtype, count, value in geotiff_tags or []
    ]
    resolution = None
    if pixel_size and pixel_size != (1.0, 1.0):
        resolution = (1.0 / pixel_size[1], 1.0 / pixel_size[0])
    target = location(out_path)
    with target.staged_write() as local_file:
        _write(local_file, mask, extratags, resolution)
    return target.url


def scaled_geotiff_tags(tags: list[list[Any]], scale: tuple[float, float]) -> list[list[Any]]:
    """GeoTIFF tags of the input for a grid of ``scale`` (y, x) input pixels per pixel: the same place on Earth.

    The pixel scale and the transformation's pixel columns grow by ``scale``; tiepoints' raster positions shrink.
    """
    if scale == (1.0, 1.0):
        return tags
    sy, sx = scale
    out = []
    for code, dtype, count, value in tags:
        if code == PIXEL_SCALE:
            value = [value[0] * sx, value[1] * sy, *value[2:]]
        elif code == TRANSFORMATION:
            value = [v * (sx if i % 4 == 0 else sy if i % 4 == 1 else 1.0) for i, v in enumerate(value)]
        elif code == TIEPOINTS:
            value = [v / sx if i % 6 == 0 else v / sy if i % 6 == 1 else v for i, v in enumerate(value)]
        out.append([code, dtype, count, value])
    return out


def _write(path: str, mask: zarr.Array[Any], extratags: list[Any], resolution: tuple[float, float] | None) -> None:
    height, width = mask.shape
    tifffile.imwrite(
        path,
        _tiles(mask, height, width),
        shape=(height, width),
        dtype=mask.dtype,
        tile=(TILE, TILE),
        compression="zlib",
        extratags=extratags,
        resolution=resolution,
        bigtiff=height * width * mask.dtype.itemsize > 2**31,
        photometric="minisblack",
    )


def _tiles(mask: zarr.Array[Any], height: int, width: int) -> Iterator[np.ndarray]:
    for y in range(0, height, TILE):
        for x in range(0, width, TILE):
            tile = np.zeros((TILE, TILE), mask.dtype)
            part = np.asarray(mask[y : y + TILE, x : x + TILE])
            tile[: part.shape[0], : part.shape[1]] = part
            yield tile
