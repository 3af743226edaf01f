"""The batch's page, ``report/index.html``, opened from disk in a real headless Chromium.

Two runs with a canary write the results table; earlier nights are the first run's rows under earlier dates. The
second run has an image that fails, so the page has a failure row, and a canary trend over four nights.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import tifffile

from flows.segment_batch import segment_batch
from segpipe.synthetic import write_sample
from tests.integration.browser import chromium, headless_page, version

pytestmark = pytest.mark.integration

EARLIER_NIGHTS = {"2026-01-01": 0.97, "2026-01-02": 1.01, "2026-01-03": 0.99}  # night -> its canary Dice, scaled

IMAGES = '[...document.images].map(i => ({src: i.getAttribute("src"), complete: i.complete, width: i.naturalWidth}))'


def _corrupt_last_tile(path: Path) -> None:
    """Garbage in the last tile's compressed bytes: planning (header, first tile) passes, ingest fails."""
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[-1], tif.pages[0].databytecounts[-1]
    with path.open("r+b") as handle:
        handle.seek(offset + count // 4)
        handle.write(bytes(range(256)) * (count // 512))


def _earlier_nights(out: Path) -> None:
    """The first run's rows copied to earlier run dates (other run ids, the canary's Dice scaled per night)."""
    (first,) = (out / "results").glob("run_date=*/*.parquet")
    table = pq.read_table(first)
    for night, scale in EARLIER_NIGHTS.items():
        rows = table.set_column(table.schema.get_field_index("run_id"), "run_id", pa.array([night] * len(table)))
        dice = pc.multiply(rows["mean_dice"], pa.scalar(scale))
        rows = rows.set_column(rows.schema.get_field_index("mean_dice"), "mean_dice", dice)
        buffer = io.BytesIO()
        pq.write_table(rows, buffer)
        folder = out / "results" / f"run_date={night}"
        folder.mkdir()
        (folder / f"{night}.parquet").write_bytes(buffer.getvalue())


@pytest.fixture(scope="module")
def browser() -> str:
    found = chromium()
    if found is None:
        pytest.skip("no chromium on PATH: scripts/test.sh installs Debian's chromium package when run as root")
    return found


def test_the_report_page_renders_its_tables_and_images_without_console_errors(
    tmp_path: Path, dask_cluster: str, browser: str
) -> None:
    good, good_truth = write_sample(tmp_path / "in", 512, seed=1, name="good")
    broken, broken_truth = write_sample(tmp_path / "in", 512, seed=2, name="broken")
    _corrupt_last_tile(broken)
    canary_image, canary_truth = write_sample(tmp_path / "canary", 192, seed=9, name="canary")
    canary = {"images": [str(canary_image)], "truths": [str(canary_truth)], "tolerance": 0.05}
    out = tmp_path / "out"
    settings = {"out": str(out), "tiling": {"chunk": 256, "tile": 128}}
    segment_batch([str(good)], [str(good_truth)], settings, cluster=dask_cluster, canary=canary)
    _earlier_nights(out)
    result = segment_batch(
        [str(good), str(broken)], [str(good_truth), str(broken_truth)], settings, cluster=dask_cluster, canary=canary
    ).to_json()
    assert [f["name"] for f in result["failures"]] == ["broken"]

    page_file = out / "report" / "index.html"
    with headless_page(browser) as page:
        page.open(page_file.as_uri())
        images = page.evaluate(IMAGES)
        image_rows = page.evaluate('document.querySelectorAll("#images tbody tr").length')
        failure_rows = page.evaluate('[...document.querySelectorAll("#failures tbody tr")].map(r => r.innerText)')
        trends = page.evaluate('[...document.querySelectorAll("#canary polyline")].map(p => p.points.length)')
        title = page.evaluate("document.title")
        errors = page.errors

    assert errors == [], version(browser)
    assert image_rows == 1
    assert len(failure_rows) == 1
    assert "broken.tif" in failure_rows[0]
    sources = [image["src"] for image in images]
    assert "../good/preview.png" in sources
    assert "worst_1_good.png" in sources
    assert "confusion.png" in sources
    broken_images = [image for image in images if not image["complete"] or image["width"] == 0]
    assert broken_images == []
    assert trends[0] == len(EARLIER_NIGHTS) + 2  # mean Dice: three earlier nights, the first run's, tonight
    assert title.startswith("segpipe batch report")
