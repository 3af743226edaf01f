"""Objects in segmentation masks: components, measurements and object metrics, at any size.

Whole-image object metrics (``matching``), exact connected components (``components``), per-object tables
(``table``) and object metrics from per-chunk overlap counts (``overlap``). The names callers used from the
former ``segpipe/objects.py`` are re-exported here.
"""

from segpipe.objects.matching import (
    COUNTS,
    THRESHOLDS,
    ObjectOverlap,
    label_objects,
    match_objects,
    metrics_from_overlap,
    object_metrics,
    object_overlap,
    score_objects,
    sequential,
    sum_object_metrics,
)

__all__ = [
    "COUNTS",
    "THRESHOLDS",
    "ObjectOverlap",
    "label_objects",
    "match_objects",
    "metrics_from_overlap",
    "object_metrics",
    "object_overlap",
    "score_objects",
    "sequential",
    "sum_object_metrics",
]
