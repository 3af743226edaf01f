"""A batch's report as files.

Every file is rendered to bytes by name (``report_files``), so a stage can write them through ``segpipe.storage`` to any
store, and ``write_report`` writes them to a local folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from segpipe.reports.overlays import Thumbnails, worst_overlays
from segpipe.reports.plots import class_scores_png, confusion_png
from segpipe.reports.tables import ImageResult, per_image_csv, score_summary, summary_csv, summary_json, write_file

ROLES = {
    "per_image.csv": "per_image_csv",
    "summary.csv": "summary_csv",
    "summary.json": "summary_json",
    "confusion.png": "confusion_png",
    "class_scores.png": "class_scores_png",
}
"""File name -> role (the key ``write_report`` returns it under), for the files every report has."""


def report_files(
    results: Sequence[ImageResult],
    class_names: Sequence[str],
    load: Callable[[str], Thumbnails] | None = None,
    worst: int = 4,
) -> dict[str, bytes]:
    """Every report file rendered to bytes, by file name.

    The files are per_image.csv, summary.csv, summary.json, confusion.png, class_scores.png and, given ``load``, the
    overlays of the ``worst`` images (``worst_<rank>_<name>.png``).
    """
    summary = score_summary(results, class_names)
    micro = summary.aggregates.micro
    files = {
        "per_image.csv": per_image_csv(results, class_names),
        "summary.csv": summary_csv(summary),
        "summary.json": summary_json(summary),
        "confusion.png": confusion_png(micro.confusion, class_names),
        "class_scores.png": class_scores_png(micro, class_names),
    }
    if load is not None:
        files.update(worst_overlays(results, load, worst))
    return files


def write_report(
    directory: str | Path,
    results: Sequence[ImageResult],
    class_names: Sequence[str],
    load: Callable[[str], Thumbnails] | None = None,
    worst: int = 4,
) -> dict[str, Any]:
    """Write ``report_files`` into ``directory``.

    Returns the paths by role (``ROLES``), the overlays' as a list under ``overlays`` (given ``load``).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Any] = {}
    overlays = []
    for name, data in report_files(results, class_names, load, worst).items():
        path = write_file(directory / name, data)
        if name in ROLES:
            paths[ROLES[name]] = path
        else:
            overlays.append(path)
    if load is not None:
        paths["overlays"] = overlays
    return paths
