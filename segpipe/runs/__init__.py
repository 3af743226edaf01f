"""Batch runs read back: a run's lineage and runs side by side.

A run's lineage is ``lineage`` (``read_lineage``, ``render_lineage``); runs side by side are ``compare``
(``compare_runs``). MLflow is reached only through ``segpipe.tracking``.
"""

from segpipe.runs.compare import compare_runs
from segpipe.runs.lineage import ImageRun, ModelLineage, RunLineage, read_lineage, render_lineage
from segpipe.tracking import InputLineage, check_reachable

__all__ = [
    "ImageRun",
    "InputLineage",
    "ModelLineage",
    "RunLineage",
    "check_reachable",
    "compare_runs",
    "read_lineage",
    "render_lineage",
]
