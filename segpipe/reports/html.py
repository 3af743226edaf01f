"""A batch's report as one static page, ``report/index.html``.

The page lists every image with its preview, its overlay (for the worst images), scores, per-class fractions,
object counts and (with ``--save-uncertainty``) mean uncertainty; the most uncertain regions of the batch with their
pictures; the images that failed; and the canary's figures with their trend over recent nights as inline SVG.
It has no script and loads nothing from the network: CSS is inline and images are relative paths (``../<name>/
preview.png`` and the report folder's PNGs), so it opens from disk and from an S3 website alike. Every string is
escaped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

from segpipe.reports.tables import column_name
from segpipe.reports.uncertain import UncertainRegion, uncertain_name

PLOTS = ("confusion.png", "class_scores.png")
DOWNLOADS = ("per_image.csv", "summary.csv", "summary.json")
CHART = (220, 48, 6)  # width, height, padding of a trend chart, in pixels

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; } th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: middle; }
th { background: #f3f3f3; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
img.thumb { height: 128px; width: auto; max-width: 384px; display: block; }
figure { display: inline-block; margin: 0 1em 1em 0; }
figure img { max-width: 520px; height: auto; } .alert { color: #b00; font-weight: bold; } .ok { color: #070; }
.muted { color: #777; } svg .mean { stroke: #999; stroke-dasharray: 3 3; } svg .line { stroke: #36c; fill: none; }
"""


class Failure(Protocol):
    """An image that failed alone (``segpipe.stages.report.ImageFailure``)."""

    @property
    def name(self) -> str:
        """The image's name."""

    @property
    def image(self) -> str:
        """Its path or URL."""

    @property
    def error(self) -> str:
        """Its error line."""

    @property
    def exit_code(self) -> int:
        """The exit code its error maps to."""


class CanaryFigure(Protocol):
    """One canary figure against recent nights (``segpipe.stages.results.CanaryCheck``)."""

    @property
    def metric(self) -> str:
        """The figure's column in the results table."""

    @property
    def tonight(self) -> float:
        """Tonight's value."""

    @property
    def recent_mean(self) -> float | None:
        """The mean over recent nights, None without any."""

    @property
    def alert(self) -> bool:
        """Whether tonight's value moved beyond the tolerance."""

    @property
    def history(self) -> tuple[tuple[str, float], ...]:
        """(run date, value) of each recent night, oldest first."""


@dataclass(frozen=True)
class PageImage:
    """One image's row on the page: its figures, None or empty where the run has none."""

    name: str
    class_pixels: tuple[int, ...] = ()
    object_counts: tuple[int, ...] = ()  # per class, background first
    mean_dice: float | None = None
    mean_iou: float | None = None
    mean_confidence: float | None = None
    skipped: bool = False
    mean_uncertainty: float | None = None  # nats, with --save-uncertainty
    uncertain_fraction: float | None = None  # share of the pixels above segpipe.uncertainty.UNCERTAIN_NATS


def preview_href(name: str) -> str:
    """An image's preview relative to the report folder: ``../<name>/preview.png``, URL-quoted."""
    return f"../{quote(name)}/preview.png"


def overlay_name(name: str, files: Sequence[str]) -> str | None:
    """The worst-image overlay among ``files`` that belongs to image ``name`` (``worst_<rank>_<name>.png``), or None."""
    pattern = re.compile(rf"worst_\d+_{re.escape(column_name(name))}\.png")
    return next((f for f in sorted(files) if pattern.fullmatch(f)), None)


def index_html(
    images: Sequence[PageImage],
    failures: Sequence[Failure],
    class_names: Sequence[str],
    canary: Sequence[CanaryFigure] = (),
    files: Sequence[str] = (),
    title: str = "segpipe batch report",
    uncertain: Sequence[UncertainRegion] = (),
) -> bytes:
    """The page as UTF-8 bytes.

    Args:
        images: the images that finished, in plan order.
        failures: the images that failed.
        class_names: the model's classes, background first.
        canary: tonight's canary figures with their recent nights.
        files: the other files of the report folder (plots, overlays, tables), linked or shown when present.
        title: the page's title.
        uncertain: the batch's most uncertain regions, most uncertain first (their pictures are among ``files``).
    """
    skipped = sum(image.skipped for image in images)
    counts = f"{len(images) + len(failures)} images: {len(failures)} failed, {skipped} reused from earlier runs"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1><p>{_e(counts)}</p>",
        _downloads(files),
        _images_table(images, class_names, files),
        _uncertain_table(uncertain, files),
        _failures_table(failures),
        _canary_table(canary),
        _figures(files),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p).encode()


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def _downloads(files: Sequence[str]) -> str:
    links = [f'<a href="{_e(quote(f))}">{_e(f)}</a>' for f in DOWNLOADS if f in files]
    return f"<p>Tables: {' · '.join(links)}</p>" if links else ""


def _images_table(images: Sequence[PageImage], class_names: Sequence[str], files: Sequence[str]) -> str:
    with_objects = any(image.object_counts for image in images)
    with_uncertainty = any(image.mean_uncertainty is not None for image in images)
    head = ["Image", "Preview", "Overlay", "Mean Dice", "Mean IoU", "Confidence"]
    head += ["Mean uncertainty (nats)", "Uncertain share"] if with_uncertainty else []
    head += [f"{name} fraction" for name in class_names]
    head += [f"{name} objects" for name in class_names[1:]] if with_objects else []
    rows = [
        _image_row(image, len(class_names), overlay_name(image.name, files), with_objects, with_uncertainty)
        for image in images
    ]
    return _table("Images", "images", head, rows, "No image finished.")


def _image_row(image: PageImage, classes: int, overlay: str | None, with_objects: bool, with_uncertainty: bool) -> str:
    total = sum(image.class_pixels)
    pixels = [image.class_pixels[k] if k < len(image.class_pixels) else None for k in range(classes)]
    fractions = [None if p is None or not total else p / total for p in pixels]
    reused = " <span class=muted>(reused from an earlier run)</span>" if image.skipped else ""
    cells = [
        f"<td>{_e(image.name)}{reused}</td>",
        _thumbnail_cell(preview_href(image.name), f"preview of {image.name}"),
        _thumbnail_cell(overlay, f"overlay of {image.name}"),
        *(f"<td class=n>{_number(v)}</td>" for v in (image.mean_dice, image.mean_iou, image.mean_confidence)),
    ]
    if with_uncertainty:
        cells += [f"<td class=n>{_number(image.mean_uncertainty)}</td>", _share_cell(image.uncertain_fraction)]
    cells += [_share_cell(f) for f in fractions]
    if with_objects:
        counts = [image.object_counts[k] if k < len(image.object_counts) else None for k in range(1, classes)]
        cells += [f"<td class=n>{'–' if c is None else c}</td>" for c in counts]
    return f"<tr>{''.join(cells)}</tr>"


def _share_cell(share: float | None) -> str:
    return f"<td class=n>{'–' if share is None or share != share else f'{share:.1%}'}</td>"


def _uncertain_table(regions: Sequence[UncertainRegion], files: Sequence[str]) -> str:
    if not regions:
        return ""
    head = ["Rank", "Image", "Region (pixels)", "Mean uncertainty (nats)", "Uncertain share", "Picture"]
    rows = []
    for rank, region in enumerate(regions, start=1):
        picture = uncertain_name(rank, region)
        cells = [
            f"<td class=n>{rank}</td><td>{_e(region.image)}</td><td>{_e(region.extent)}</td>",
            f"<td class=n>{_number(region.mean_uncertainty)}</td>",
            _share_cell(region.uncertain_fraction),
            _thumbnail_cell(quote(picture) if picture in files else None, f"uncertainty of {region.image}"),
        ]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return _table("Most uncertain regions", "uncertain", head, rows, "")


def _thumbnail_cell(href: str | None, alt: str) -> str:
    if href is None:
        return "<td class=muted>–</td>"
    return f'<td><a href="{_e(href)}"><img class="thumb" src="{_e(href)}" alt="{_e(alt)}"></a></td>'


def _failures_table(failures: Sequence[Failure]) -> str:
    rows = [
        f"<tr><td>{_e(f.name)}</td><td>{_e(f.image)}</td><td class=alert>{_e(f.error)}</td>"
        f"<td class=n>{_e(f.exit_code)}</td></tr>"
        for f in failures
    ]
    return _table("Failures", "failures", ["Image", "Input", "Error", "Exit code"], rows, "No image failed.")


def _canary_table(canary: Sequence[CanaryFigure]) -> str:
    if not canary:
        return ""
    head = ["Figure", "Trend (recent nights, then tonight)", "Nights", "Recent mean", "Tonight", "Status"]
    rows = [
        f"<tr><td>{_e(c.metric)}</td><td>{_trend_svg(c)}<div class=muted>{_e(_span(c))}</div></td>"
        f"<td class=n>{len(c.history)}</td>"
        f"<td class=n>{_number(c.recent_mean)}</td><td class=n>{_number(c.tonight)}</td>"
        f"<td class={'alert' if c.alert else 'ok'}>{'moved beyond tolerance' if c.alert else 'within tolerance'}</td>"
        "</tr>"
        for c in canary
    ]
    return _table("Canary", "canary", head, rows, "")


def _trend_svg(figure: CanaryFigure) -> str:
    """The figure's recent nights and tonight as a line chart; each point's date and value in its tooltip."""
    width, height, pad = CHART
    points = [*figure.history, ("tonight", figure.tonight)]
    values = [v for _, v in points]
    low, high = min(values), max(values)
    span = high - low or 1.0

    def y(value: float) -> float:
        return height - pad - (value - low) / span * (height - 2 * pad) if high > low else height / 2

    step = (width - 2 * pad) / max(1, len(points) - 1)
    xy = [(pad + k * step, y(v)) for k, v in enumerate(values)]
    line = " ".join(f"{x:.1f},{yy:.1f}" for x, yy in xy)
    marks = [
        f'<circle cx="{x:.1f}" cy="{yy:.1f}" r="3" fill="{"#b00" if k == len(xy) - 1 and figure.alert else "#36c"}">'
        f"<title>{_e(date)}: {_number(value)}</title></circle>"
        for k, ((x, yy), (date, value)) in enumerate(zip(xy, points, strict=True))
    ]
    mean = figure.recent_mean
    guide = (
        f'<line class="mean" x1="{pad}" x2="{width - pad}" y1="{y(mean):.1f}" y2="{y(mean):.1f}"/>'
        if mean is not None and low <= mean <= high
        else ""
    )
    label = f"{figure.metric}: " + ", ".join(f"{d} {_number(v)}" for d, v in points)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{_e(label)}">{guide}<polyline class="line" points="{line}"/>{"".join(marks)}</svg>'
    )


def _span(figure: CanaryFigure) -> str:
    return f"{figure.history[0][0]} … tonight" if figure.history else "tonight only"


def _figures(files: Sequence[str]) -> str:
    overlays = sorted((f for f in files if re.fullmatch(r"worst_\d+_.+\.png", f)), key=_rank)
    uncertain = sorted((f for f in files if re.fullmatch(r"uncertain_\d+_.+\.png", f)), key=_rank)
    shown = [f for f in PLOTS if f in files] + overlays
    parts = ["<h2>Scores and the worst images</h2>\n" + _figure_row(shown)] if shown else []
    if uncertain:
        parts.append("<h2>The most uncertain regions</h2>\n" + _figure_row(uncertain))
    return "\n".join(parts)


def _figure_row(names: Sequence[str]) -> str:
    return "\n".join(
        f'<figure><img src="{_e(quote(f))}" alt="{_e(f)}"><figcaption>{_e(f)}</figcaption></figure>' for f in names
    )


def _rank(name: str) -> int:
    return int(name.split("_", 2)[1])


def _table(heading: str, ident: str, head: Sequence[str], rows: Sequence[str], empty: str) -> str:
    if not rows:
        return f"<h2>{_e(heading)}</h2><p class=muted>{_e(empty)}</p>"
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "\n".join(rows)
    table = f'<table id="{_e(ident)}"><thead><tr>{header}</tr></thead>\n<tbody>{body}</tbody></table>'
    return f"<h2>{_e(heading)}</h2>\n{table}"
