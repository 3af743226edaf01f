"""preview.png: three titled panels and a legend naming each class colour."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from segpipe.io.images import open_image
from segpipe.preview import BAND, PALETTE, gray_thumbnail, render_preview


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


def test_preview_panels_show_the_grays_within_one_level_and_the_class_colours_exactly(tmp_path: Path) -> None:
    """A palette PNG: the image panel is its 0..1 gray thumbnail at 240 levels, the others the class colours."""
    labels = np.zeros((64, 96), np.uint8)
    labels[10:40, 20:70] = 1
    gray = np.tile(np.linspace(0, 255, 96).astype(np.uint8), (64, 1))
    tifffile.imwrite(tmp_path / "image.tif", gray)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    source, mask = open_image(tmp_path / "image.tif"), open_image(tmp_path / "labels.tif")
    picture = Image.open(io.BytesIO(render_preview(source, mask, None, None)))
    assert picture.mode == "P"
    pixels = np.asarray(picture.convert("RGB")).astype(int)
    image_panel, prediction_panel = pixels[BAND : BAND + 64, :96], pixels[BAND : BAND + 64, 100:196]
    expected = np.rint(gray_thumbnail(source, None, 512) * 255).astype(int)
    assert np.abs(image_panel - expected[..., None]).max() <= 1
    np.testing.assert_array_equal(prediction_panel, PALETTE[labels].astype(int))
