"""The content scans before any write: one chunk is read in the calling thread, several on the threaded scheduler;
both give the same answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from segpipe.errors import InputError
from segpipe.io.images import open_image
from segpipe.stages.validation import check_mapping, scan_image


def _tiff(path: Path, data: np.ndarray) -> str:
    tifffile.imwrite(path, data)
    return str(path)


@pytest.mark.parametrize("chunk", [64, 256])  # 3 x 3 chunks, and one
def test_a_scan_over_many_chunks_equals_the_scan_of_one(tmp_path: Path, chunk: int) -> None:
    data = np.random.default_rng(0).normal(size=(160, 150)).astype(np.float32)
    data[150, 140], data[3, 2] = np.nan, np.inf  # in the last chunk and the first
    scan = scan_image(open_image(_tiff(tmp_path / "f.tif", data)), chunk)
    finite = data[np.isfinite(data)]
    assert scan.nonfinite == 2
    assert scan.pixels == finite.size
    assert (scan.low, scan.high) == (float(finite.min()), float(finite.max()))


@pytest.mark.parametrize("chunk", [64, 256])
def test_an_unmapped_instance_id_is_found_in_any_chunk(tmp_path: Path, chunk: int) -> None:
    ids = np.zeros((160, 150), np.uint16)
    ids[10:20, 10:20], ids[140:150, 130:140] = 1, 9  # id 9 only in the last chunk at 64
    truth = open_image(_tiff(tmp_path / "ids.tif", ids))
    check_mapping(truth, {1: 1, 9: 1}, classes=2, chunk=chunk)
    with pytest.raises(InputError, match="instance id 9 has no class"):
        check_mapping(truth, {1: 1}, classes=2, chunk=chunk)
