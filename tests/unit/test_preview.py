"""preview.png: three titled panels and a legend naming each class colour."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from segpipe.io.images import open_image
from segpipe.preview import BAND, PALETTE, render_preview


def test_preview_has_titles_and_a_legend(tmp_path: Path) -> None:
    labels = np.zeros((64, 96), np.uint8)
    labels[10:40, 20:70] = 1
    tifffile.imwrite(tmp_path / "image.tif", (labels * 200 + 20).astype(np.uint8))
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    source, mask = open_image(tmp_path / "image.tif"), open_image(tmp_path / "labels.tif")
    png = render_preview(source, mask, mask, None, class_names=("background", "nucleus"))
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert pixels.shape[0] == BAND + 64 + BAND + 2  # title strip, panels, one legend row
    assert pixels.shape[1] == 3 * 96 + 2 * 4
    title_strip, legend = pixels[:BAND], pixels[BAND + 64 :]
    for left in (0, 100, 200):  # a title drawn in black above each panel
        assert (title_strip[:, left : left + 60] < 100).all(axis=2).any()
    assert (legend == PALETTE[1]).all(axis=2).sum() >= 100  # the nucleus swatch in its colour
