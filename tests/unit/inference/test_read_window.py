"""Reading a chunk's window grown by its halo (``chunk_inference.read_window``): mirrored only past the border."""

from __future__ import annotations

import numpy as np
import pytest

from segpipe.chunk_inference import read_window
from segpipe.tiling import Region, clip

from ..helpers import write_zarr


@pytest.mark.parametrize(
    ("height", "width", "region", "halo"),
    [
        (1, 1, Region(0, 1, 0, 1), 9),  # 1 x 1 image: the window is all mirror
        (30, 41, Region(10, 20, 12, 24), 5),  # interior: no padding at all
        (30, 41, Region(0, 10, 0, 12), 7),  # top-left corner
        (30, 41, Region(24, 30, 36, 41), 8),  # bottom-right edge chunk, cut short
        (3, 41, Region(0, 3, 12, 24), 10),  # halo taller than the image
    ],
)
def test_read_window_mirrors_only_past_the_border(tmp_path, height, width, region, halo) -> None:
    image = np.random.default_rng(0).integers(0, 1000, (2, height, width)).astype(np.uint16)
    source = write_zarr(tmp_path / "img.zarr", image, chunks=(2, 7, 9))
    window = read_window(source, region, halo)
    padded = np.pad(image, ((0, 0), (halo, halo), (halo, halo)), mode="symmetric")
    np.testing.assert_array_equal(window, padded[:, region.y0 : region.y1 + 2 * halo, region.x0 : region.x1 + 2 * halo])
    want = region.grow(halo)
    if clip(want, height, width) == want:  # nothing past the border: exactly the image's own pixels
        np.testing.assert_array_equal(window, image[:, want.y0 : want.y1, want.x0 : want.x1])
