"""Real servers and clusters: one Prefect test server per session, one Dask LocalCluster per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

from segpipe import synthetic
from segpipe.io import datasets

REPO = Path(__file__).resolve().parents[2]
DATA_CACHE = REPO / ".cache" / "test-data"


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
    try:
        image, mask = datasets.dsb_nuclei(DATA_CACHE)
    except datasets.DataUnavailable as exc:
        pytest.skip(f"no package registry reachable: {exc}")
    return str(image), str(mask)
