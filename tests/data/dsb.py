"""Real sample data that a registry package ships: stardist 0.9.2's DSB 2018 nuclei image and instance mask.

Fetched once with ``pip download --no-deps`` (no model hub, no data host: only the package registry) into a
cache directory; nothing is installed.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import tifffile

STARDIST = "stardist==0.9.2"
FILES = ("stardist/data/images/img2d.tif", "stardist/data/images/mask2d.tif")


class DataUnavailable(RuntimeError):
    """The package registry could not be reached."""


def dsb_nuclei(cache: str | Path) -> tuple[Path, Path]:
    """Paths of ``img2d.tif`` (512 x 512 uint16) and ``mask2d.tif`` (instance ids) in ``cache``."""
    cache = Path(cache)
    targets = tuple(cache / Path(name).name for name in FILES)
    if all(t.exists() for t in targets):
        return targets[0], targets[1]
    cache.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", STARDIST, "-d", str(cache)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    wheels = sorted(cache.glob("stardist-0.9.2-*.whl"))
    if done.returncode != 0 or not wheels:
        raise DataUnavailable(f"cannot fetch {STARDIST} from the package registry: {done.stderr.strip()[-300:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        for name, target in zip(FILES, targets, strict=True):
            target.write_bytes(wheel.read(name))
    return targets[0], targets[1]


def mirror_mosaic(image: np.ndarray, repeats: int) -> np.ndarray:
    """Tile ``image`` ``repeats`` x ``repeats`` times, mirroring alternate copies so edges stay continuous."""
    rows = [np.flip(image, 0) if r % 2 else image for r in range(repeats)]
    column = np.concatenate(rows, axis=0)
    return np.concatenate([np.flip(column, 1) if c % 2 else column for c in range(repeats)], axis=1)


def write_nuclei_mosaic(cache: str | Path, out: str | Path, repeats: int) -> tuple[Path, Path]:
    """A (512 * repeats)^2 tiled TIFF mosaic of the DSB nuclei image and its foreground truth (0/1)."""
    image_path, mask_path = dsb_nuclei(cache)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    image = mirror_mosaic(tifffile.imread(image_path), repeats)
    truth = mirror_mosaic((tifffile.imread(mask_path) > 0).astype(np.uint8), repeats)
    paths = out / f"nuclei_mosaic_{repeats}x.tif", out / f"nuclei_mosaic_{repeats}x_truth.tif"
    tifffile.imwrite(paths[0], image, tile=(256, 256), compression="zlib")
    tifffile.imwrite(paths[1], truth, tile=(256, 256), compression="zlib")
    return paths
