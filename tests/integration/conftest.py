"""Real servers and clusters: one Prefect test server per session, one Dask LocalCluster per module."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

from segpipe import synthetic

REPO = Path(__file__).resolve().parents[2]
DATA_CACHE = REPO / ".cache" / "test-data"
STARDIST = "stardist==0.9.2"
STARDIST_FILES = ("stardist/data/images/img2d.tif", "stardist/data/images/mask2d.tif")


@pytest.fixture(scope="session", autouse=True)
def prefect_server() -> Iterator[str]:
    """Prefect's temporary server (SQLite), started once; flows in this session report to it."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[str]:
    """A real LocalCluster of two single-threaded worker processes; yields the scheduler address."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def write_image_pair(directory: Path, name: str, height: int, width: int, seed: int) -> tuple[str, str]:
    """A striped, LZW-compressed uint16 nuclei image of any size and its truth."""
    image, truth = synthetic.render(0, height, 0, width, seed)
    noise = np.random.default_rng(seed).normal(0, 0.02, image.shape)
    pixels = np.clip((image + noise) * 4000 + 100, 0, 65535).astype(np.uint16)
    image_path, truth_path = directory / f"{name}.tif", directory / f"{name}_truth.tif"
    tifffile.imwrite(image_path, pixels, rowsperstrip=64, compression="lzw")
    tifffile.imwrite(truth_path, truth, compression="zlib")
    return str(image_path), str(truth_path)


@pytest.fixture(scope="session")
def real_nuclei() -> tuple[str, str]:
    """stardist 0.9.2's DSB 2018 nuclei image and instance mask, fetched from the package registry once."""
    targets = [DATA_CACHE / Path(name).name for name in STARDIST_FILES]
    if not all(t.exists() for t in targets):
        DATA_CACHE.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", STARDIST, "-d", str(DATA_CACHE)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        wheels = sorted(DATA_CACHE.glob("stardist-0.9.2-*.whl"))
        if done.returncode != 0 or not wheels:
            pytest.skip(f"no package registry reachable to fetch {STARDIST}: {done.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name, target in zip(STARDIST_FILES, targets, strict=True):
                target.write_bytes(wheel.read(name))
    return str(targets[0]), str(targets[1])
