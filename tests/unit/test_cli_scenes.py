"""End to end through ``segpipe run``: a multi-band GeoTIFF scene with a nodata collar, --bands and --foreground."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from segpipe.cli import main

GDAL_NODATA = 42113


def test_run_picks_bands_and_skips_the_nodata_collar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(3)
    data = np.zeros((4, 256, 256), np.uint16)
    data[:, 100:160, 100:160] = 1000 + rng.integers(0, 20, (4, 60, 60))
    data[0, 100:160, 100:160] = 60000  # band 1 is not the model's: read, it would make the footprint foreground
    data[2, 115:145, 115:145] = 3000  # band 3 holds the object
    scene = tmp_path / "scene.tif"
    tifffile.imwrite(scene, data, photometric="minisblack", extratags=[(GDAL_NODATA, "s", 0, "0", True)])
    args = ["run", str(scene), "--model", "baseline", "--bands", "3", "--foreground", "nodata", "--chunk", "64"]
    args += ["--tile", "64", "--out", str(tmp_path / "out"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    code = main([*args, "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)["images"][0]
    mask = np.asarray(zarr.open_array(report["mask"], mode="r")[:])
    outside = np.ones((256, 256), bool)
    outside[115:145, 115:145] = False
    assert not mask[outside].any()  # statistics of the footprint only: its background stays below the threshold
    assert mask[117:143, 117:143].all()  # the square, less the corners the baseline's opening rounds off
    assert report["chunks_skipped"] == 12
    assert report["chunks_computed"] == 4
    assert report["foreground_fraction"] == pytest.approx(3600 / 65536)
    assert report["megapixels_computed"] == pytest.approx(4 * 64 * 64 / 1e6)
