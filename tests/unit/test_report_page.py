"""The report page (segpipe/reports/html.py): its tables, relative image paths, escaping and the canary's trend."""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser

from segpipe.reports import PageImage, index_html, overlay_name, preview_href
from segpipe.stages.report import ImageFailure
from segpipe.stages.results import CanaryCheck

CLASSES = ("background", "nucleus")
FILES = ("class_scores.png", "confusion.png", "per_image.csv", "summary.json", "worst_1_b_c.png", "worst_2_a.png")


@dataclass
class Tag:
    name: str
    attrs: dict[str, str]
    parents: tuple[str, ...]  # ids of the tables around it


class Tags(HTMLParser):
    """Every start tag, with the ids of the tables it sits in; and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[Tag] = []
        self.tables: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append(Tag(tag, values, tuple(self.tables)))
        if tag == "table":
            self.tables.append(values.get("id", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.tables.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: bytes) -> Tags:
    parser = Tags()
    parser.feed(page.decode())
    return parser


def page(title: str = "segpipe batch report") -> bytes:
    images = [
        PageImage("a", (75, 25), (), 0.9, 0.8, 0.95),
        PageImage("b&c", (100, 0), (0, 3), None, None, None, skipped=True),
    ]
    failures = [ImageFailure("<bad>", "/in/<bad>.tif", '/in/<bad>.tif: truncated & "odd"', 2)]
    canary = [CanaryCheck("mean_dice", 0.5, 0.9, 2, 0.05, history=(("2026-03-01", 0.88), ("2026-03-02", 0.92)))]
    return index_html(images, failures, CLASSES, canary, FILES, title)


def test_one_row_per_image_and_per_failure() -> None:
    tags = parse(page()).tags
    rows = [t for t in tags if t.name == "tr"]
    assert len([r for r in rows if r.parents == ("images",)]) == 3  # header and two images
    assert len([r for r in rows if r.parents == ("failures",)]) == 2


def test_previews_and_overlays_are_relative_paths() -> None:
    sources = [t.attrs["src"] for t in parse(page()).tags if t.name == "img"]
    assert sources[:3] == ["../a/preview.png", "worst_2_a.png", "../b%26c/preview.png"]
    assert "confusion.png" in sources


def test_no_link_or_image_leaves_the_report_folder_for_the_network() -> None:
    tags = parse(page()).tags
    links = [t.attrs.get("src") or t.attrs.get("href") for t in tags if t.name in ("img", "a")]
    assert all("://" not in link for link in links if link), links


def test_the_page_has_no_script() -> None:
    assert "script" not in {t.name for t in parse(page()).tags}


def test_every_string_is_escaped() -> None:
    html = page(title="<i>x</i>").decode()
    assert "<bad>" not in html
    assert "/in/&lt;bad&gt;.tif: truncated &amp; &quot;odd&quot;" in html
    assert "<i>" not in html


def test_fractions_and_object_counts_per_class() -> None:
    text = " ".join(parse(page()).text)
    assert "75.0%" in text
    assert "25.0%" in text
    assert "nucleus objects" in text


def test_the_canary_trend_draws_each_night_then_tonight() -> None:
    tags = parse(page()).tags
    (line,) = [t for t in tags if t.name == "polyline"]
    assert len(line.attrs["points"].split()) == 3
    marks = [t for t in tags if t.name == "circle"]
    assert marks[-1].attrs["fill"] == "#b00"  # tonight's Dice fell beyond the tolerance


def test_a_page_without_canary_or_failures_says_none_failed() -> None:
    html = index_html([PageImage("a")], [], CLASSES).decode()
    assert "No image failed." in html
    assert "<svg" not in html


def test_overlay_names_match_by_column_name() -> None:
    assert overlay_name("b&c", FILES) == "worst_1_b_c.png"
    assert overlay_name("d", FILES) is None
    assert preview_href("x y") == "../x%20y/preview.png"
