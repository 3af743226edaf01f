"""Experiment tracking: the store, MLflow behind ``Tracker``, lineage, runs read back, batch logging.

Where the store is (``store``), MLflow behind the ``Tracker`` protocol (``mlflow``), its calls in a child process
started early (``process``, ``child``), a run's lineage as a value (``lineage``), runs read back as plain values
(``reader``) and the logging of a finished batch (``batch_log``, imported on use: it knows the stages' results).
MLflow is imported only inside this package and the model registry.
"""

from segpipe.tracking.lineage import IMAGE_TAG, PARENT_TAG, InputLineage, Lineage
from segpipe.tracking.mlflow import MlflowTracker, NullTracker, Tracker, fetch_runs
from segpipe.tracking.process import TrackerProcess, discard_warm_up, start_importing, tracker_for, warm_up
from segpipe.tracking.reader import RunReader, RunRecord, check_reachable
from segpipe.tracking.store import (
    DEFAULT_EXPERIMENT,
    check_tracking_uri,
    create_sqlite_store,
    default_artifact_root,
    default_tracking_uri,
    segpipe_home,
    sqlite_path,
)

__all__ = [
    "DEFAULT_EXPERIMENT",
    "IMAGE_TAG",
    "PARENT_TAG",
    "InputLineage",
    "Lineage",
    "MlflowTracker",
    "NullTracker",
    "RunReader",
    "RunRecord",
    "Tracker",
    "check_reachable",
    "check_tracking_uri",
    "create_sqlite_store",
    "default_artifact_root",
    "default_tracking_uri",
    "fetch_runs",
    "segpipe_home",
    "sqlite_path",
    "TrackerProcess",
    "start_importing",
    "tracker_for",
    "discard_warm_up",
    "warm_up",
]
