"""Files in the layouts scanners and GIS tools write, built with tifffile for the level and foreground tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
import zarr

APERIO = "Aperio Image Library v12.0.15"
UTM_33N = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633)  # GeoKeyDirectory: projected, UTM 33N


def write_svs(path: Path, image: np.ndarray, downsamples: tuple[int, ...] = (4,), mpp: float = 0.25) -> Path:
    """An Aperio SVS: tiled JPEG levels (baseline, then each downsample), an untiled thumbnail second."""
    height, width = image.shape[:2]
    head = f"{APERIO} \r\n{width}x{height} [0,0 {width}x{height}] (256x256) JPEG/RGB Q=90"
    jpeg = {"photometric": "rgb", "compression": "jpeg", "compressionargs": {"level": 90}, "metadata": None}
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(256, 256), description=f"{head}|AppMag = 40|MPP = {mpp}", **jpeg)
        tif.write(np.ascontiguousarray(image[::32, ::32]), description=f"{head} -> thumbnail", **jpeg)
        for factor in downsamples:
            level = np.ascontiguousarray(image[::factor, ::factor])
            size = f"{level.shape[1]}x{level.shape[0]}"
            tif.write(level, tile=(256, 256), description=f"{head} -> {size} JPEG/RGB Q=90", **jpeg)
    return path


def write_ome_pyramid(path: Path, image: np.ndarray, size_um: tuple[float, float], levels: int = 3) -> Path:
    """A pyramidal OME-TIFF (C, Y, X): level 0 with ``levels - 1`` SubIFDs, each half the one before."""
    meta = {
        "axes": "CYX",
        "PhysicalSizeY": size_um[0],
        "PhysicalSizeYUnit": "µm",
        "PhysicalSizeX": size_um[1],
        "PhysicalSizeXUnit": "µm",
    }
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, subifds=levels - 1, tile=(64, 64), metadata=meta)
        for level in range(1, levels):
            step = 2**level
            tif.write(np.ascontiguousarray(image[:, ::step, ::step]), subfiletype=1, tile=(64, 64))
    return path


def write_geotiff(path: Path, image: np.ndarray, metres: float, nodata: float | None, overviews: int = 1) -> Path:
    """A GeoTIFF on UTM 33N with ``metres`` per pixel, GDAL_NODATA ``nodata`` and GDAL-style overviews."""
    tags = [
        (33550, "d", 3, (metres, metres, 0.0)),
        (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0)),
        (34735, "H", len(UTM_33N), UTM_33N),
    ]
    if nodata is not None:
        tags.append((42113, "s", 0, f"{nodata:g}"))
    planar = {"photometric": "minisblack", "planarconfig": "separate"} if image.ndim == 3 else {}
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(64, 64), extratags=tags, **planar)
        for level in range(1, overviews + 1):
            step = 2**level
            tif.write(np.ascontiguousarray(image[..., ::step, ::step]), tile=(64, 64), subfiletype=1, **planar)
    return path


def write_ome_zarr(path: Path, image: np.ndarray, scale: tuple[float, float], unit: str | None, levels: int) -> Path:
    """An OME-Zarr (NGFF 0.5) image group with ``levels`` datasets, each half the one before."""
    group = zarr.open_group(path, mode="w", zarr_format=3)
    axes = [{"name": "c", "type": "channel"}] + [
        {"name": name, "type": "space", **({"unit": unit} if unit else {})} for name in ("y", "x")
    ]
    datasets = []
    for level in range(levels):
        step = 2**level
        group.create_array(str(level), data=np.ascontiguousarray(image[:, ::step, ::step]), chunks=(1, 32, 32))
        transform = {"type": "scale", "scale": [1.0, scale[0] * step, scale[1] * step]}
        datasets.append({"path": str(level), "coordinateTransformations": [transform]})
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": datasets}]}
    return path


def tissue_slide(height: int, width: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """An RGB brightfield slide about two-thirds white glass, and its truth (True: tissue).

    Tissue is a few overlapping pink and purple discs (eosin and haematoxylin); glass is near white with
    sensor noise and a few specks of dust too small to be tissue.
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    truth = np.zeros((height, width), dtype=bool)
    for cy, cx, r in ((0.35, 0.3, 0.265), (0.6, 0.45, 0.245), (0.5, 0.75, 0.17)):
        truth |= (rows - cy * height) ** 2 + (cols - cx * width) ** 2 < (r * min(height, width)) ** 2
    image = np.clip(rng.normal(238, 3, (height, width, 3)), 0, 255)
    pink, purple = np.array([225.0, 140.0, 185.0]), np.array([120.0, 70.0, 160.0])
    mix = rng.random((height, width, 1))
    stain = mix * pink + (1 - mix) * purple + rng.normal(0, 12, (height, width, 3))
    image[truth] = np.clip(stain[truth], 0, 255)
    for _ in range(20):  # dust: a pixel or two of dark grey on the glass
        y, x = int(rng.integers(0, height - 2)), int(rng.integers(0, width - 2))
        image[y : y + 2, x : x + 2] = 90
    return image.astype(np.uint8), truth
