"""Reports from per-image results: tables, plots, overlays of the worst images, and files.

Tables are CSV and JSON (``tables``), plots a confusion heatmap and per-class bars (``plots``), overlays of the worst
images (``overlays``), pictures of the most uncertain regions (``uncertain``), the page ``index.html`` (``html``) and
the whole report as files (``files``). Every file is rendered to bytes and written through ``segpipe.storage``.
Pure: nothing here imports MLflow, Prefect or Dask. The comparison of runs is ``segpipe.runs.compare_runs``.
"""

from segpipe.reports.files import report_files, write_report
from segpipe.reports.html import CanaryFigure, Failure, PageImage, index_html, overlay_name, preview_href
from segpipe.reports.overlays import (
    OVERLAY_COLOURS,
    Thumbnails,
    overlay,
    overlay_png,
    worst_overlays,
    write_overlay,
    write_worst_overlays,
)
from segpipe.reports.plots import class_scores_png, confusion_png, plot_class_scores, plot_confusion
from segpipe.reports.tables import (
    OBJECT_COLUMNS,
    SUMMARY_COLUMNS,
    ImageResult,
    ScoreSummary,
    column_name,
    per_image_csv,
    per_image_rows,
    score_summary,
    summary_csv,
    summary_json,
    summary_rows,
    worst_images,
    write_file,
    write_per_image_csv,
    write_summary_csv,
    write_summary_json,
)
from segpipe.reports.uncertain import (
    UncertainRegion,
    most_uncertain,
    region_figures,
    uncertain_name,
    uncertain_overlays,
    uncertain_png,
)

__all__ = [
    "OBJECT_COLUMNS",
    "OVERLAY_COLOURS",
    "CanaryFigure",
    "Failure",
    "SUMMARY_COLUMNS",
    "ImageResult",
    "PageImage",
    "ScoreSummary",
    "Thumbnails",
    "UncertainRegion",
    "class_scores_png",
    "column_name",
    "confusion_png",
    "index_html",
    "most_uncertain",
    "overlay",
    "overlay_name",
    "overlay_png",
    "per_image_csv",
    "per_image_rows",
    "plot_class_scores",
    "plot_confusion",
    "preview_href",
    "region_figures",
    "report_files",
    "score_summary",
    "summary_csv",
    "summary_json",
    "summary_rows",
    "uncertain_name",
    "uncertain_overlays",
    "uncertain_png",
    "worst_images",
    "worst_overlays",
    "write_file",
    "write_overlay",
    "write_per_image_csv",
    "write_report",
    "write_summary_csv",
    "write_summary_json",
    "write_worst_overlays",
]
