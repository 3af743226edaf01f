"""The batch's most uncertain regions (segpipe/reports/uncertain.py) and their rows on the page."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from segpipe.reports import PageImage, index_html, most_uncertain, region_figures, uncertain_overlays, uncertain_png
from segpipe.reports.uncertain import HOT, UncertainRegion, heat
from segpipe.tiling import Region


def _region(image: str, mean: float, y0: int = 0) -> UncertainRegion:
    return UncertainRegion(image, Region(y0, y0 + 2, 0, 2), mean, 0.0)


def test_figures_are_the_mean_and_the_share_above_the_threshold() -> None:
    values = np.array([[0.0, 0.6], [0.2, 0.69]], np.float16)
    region = region_figures("a", Region(4, 6, 8, 10), values)
    assert region.mean_uncertainty == pytest.approx(float(values.astype(np.float64).mean()))
    assert region.uncertain_fraction == 0.5
    assert region.extent == "y 4..6, x 8..10"


def test_the_highest_means_come_first_and_ties_are_broken_by_name_then_position() -> None:
    regions = [_region("b", 0.3), _region("a", 0.1), _region("a", 0.3, y0=2), _region("a", 0.3), _region("c", 0.6)]
    ranked = most_uncertain(regions, 3)
    assert [(r.image, r.region.y0, r.mean_uncertainty) for r in ranked] == [("c", 0, 0.6), ("a", 0, 0.3), ("a", 2, 0.3)]


def test_the_ranking_streams_its_regions() -> None:
    def regions() -> Iterator[UncertainRegion]:
        for k in range(1000):
            yield _region("a", (k * 37 % 1000) / 1000, y0=2 * k)

    assert [r.mean_uncertainty for r in most_uncertain(regions(), 2)] == [0.999, 0.998]


def test_the_heat_goes_from_the_grey_image_to_red_with_entropy() -> None:
    image = np.full((1, 3), 0.5, np.float32)
    rgb = heat(image, np.array([[0.0, 0.35, 0.7]]), max_nats=0.7).astype(int)
    assert tuple(rgb[0, 0]) == (128, 128, 128)
    assert rgb[0, 0, 0] < rgb[0, 1, 0] < rgb[0, 2, 0]
    assert rgb[0, 0, 1] > rgb[0, 1, 1] > rgb[0, 2, 1]
    np.testing.assert_allclose(rgb[0, 2], 0.2 * 127.5 + 0.8 * HOT, atol=1)  # at max_nats: 80% red


def test_the_picture_is_the_image_beside_its_heat() -> None:
    image = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    values = np.zeros((32, 32), np.float32)
    values[:, 16:] = 0.69
    picture = np.asarray(Image.open(io.BytesIO(uncertain_png(image, values, "t", 0.69))).convert("RGB")).astype(int)
    left, right = picture[: 32 * 8, : 32 * 8], picture[: 32 * 8, 34 * 8 :]
    assert (left[..., 0] == left[..., 1]).all()  # grey
    assert (right[:, :128, 0] == right[:, :128, 1]).all()
    assert (right[:, 128:, 0] > right[:, 128:, 1] + 100).all()
    with pytest.raises(ValueError, match="differ in shape"):
        uncertain_png(image, values[:8], "t", 0.69)


def test_the_page_lists_the_regions_with_their_pictures_escaped() -> None:
    regions = most_uncertain([_region("<b>", 0.4), _region("c", 0.2)], 2)
    files = uncertain_overlays(regions, lambda r: (np.zeros((2, 2)), np.full((2, 2), r.mean_uncertainty)), 0.69)
    assert len(files) == 2
    assert list(files)[1] == "uncertain_2_c.png"
    images = [PageImage("c", (3, 1), mean_uncertainty=0.25, uncertain_fraction=0.125)]
    page = index_html(images, [], ("bg", "fg"), files=tuple(files), uncertain=regions).decode()
    table = page[page.index('<table id="uncertain">') :].split("</table>")[0]
    assert "&lt;b&gt;" in table
    assert "<b>" not in table
    assert table.count("<tr>") == 3
    assert "0.400" in table
    assert "100.0%" not in table
    for name in files:
        assert f'src="{name}"' in table
        assert f'<img src="{name}"' in page  # a row and a figure
    assert "0.250" in page
    assert "12.5%" in page  # the image's own figures in the images table
    assert page.index("The most uncertain regions") > page.index("Most uncertain regions")


def test_a_page_without_uncertainty_has_no_such_columns() -> None:
    page = index_html([PageImage("c", (3, 1))], [], ("bg", "fg")).decode()
    assert "uncertain" not in page.lower()
