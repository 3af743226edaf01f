"""A batch logged while it runs: the parent run once the cluster is up, each image's run once the image is committed.

A long batch shows its finished images in MLflow as it goes, and the end of a batch of many small images does not
wait for every image's run (about 25 ms each on a SQLite store). Logging never holds the images: the calls run on
one background thread, in turn, and a fault there (a tracking outage, a logging process that died) is kept, not
raised; live logging stops. ``finish``, the batch's last step, logs what is left (images finished earlier or not
logged meanwhile, the batch's metrics and report files) and ends the parent run. After a fault it ends the partial
parent run FAILED and logs the whole batch afresh with a new tracker, so a tracking outage still loses no work and
a retried ``finish`` logs it all once the store answers. A batch that fails before ``finish`` ends its parent run
FAILED on ``close``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from typing import Any

from segpipe.errors import one_line
from segpipe.stages.plan import BatchPlan
from segpipe.stages.report import ImageReport
from segpipe.stages.results import BatchSummary
from segpipe.tracking.batch_log import LoggedRuns, end_quietly, image_run, log_batch_files, run_metrics
from segpipe.tracking.lineage import Lineage
from segpipe.tracking.mlflow import Tracker

LOG = logging.getLogger(__name__)
TrackerOpener = Callable[[], AbstractContextManager[Tracker]]


class LiveBatchLog:
    """One batch's MLflow log: started at once in the background, fed image by image, finished by ``finish``."""

    def __init__(self, open_tracker: TrackerOpener, plan: BatchPlan, params: dict[str, Any], lineage: Lineage) -> None:
        """Start the batch's parent run in the background (the store may still be opening in the logging process)."""
        self._open_tracker = open_tracker
        self._plan, self._params, self._tags = plan, params, lineage.to_tags()
        self._staging = tempfile.mkdtemp(prefix="segpipe-mlflow-")  # remote outputs' files, copied to upload
        self._trackers = ExitStack()
        self._tracker: Tracker | None = None
        self._batch_run = ""
        self._image_runs: dict[str, str] = {}  # image name -> its run id, for the image runs logged
        self._broken = False  # a call failed: no more live logging; finish logs the batch afresh
        self._finished = False
        self._thread = ThreadPoolExecutor(1, "segpipe-mlflow")
        self._submit(self._start)

    def log_image(self, report: ImageReport) -> None:
        """Log ``report``'s run in the background; the caller does not wait."""
        self._submit(self._log_images, [report])

    def finish(self, batch: BatchSummary, reports: Sequence[ImageReport], report_files: Sequence[str]) -> LoggedRuns:
        """Wait for the live calls, log the images not logged yet, the batch's metrics and files; end the run.

        ``reports`` are every image report of the batch, in the batch's order. Raises ``TrackingError`` when the
        store cannot take them; a second call starts the batch afresh.
        """
        self._thread.shutdown(wait=True)
        try:
            if self._broken or self._tracker is None or not self._batch_run:
                self._restart()
            assert self._tracker is not None
            self._log_images([r for r in reports if r.name not in self._image_runs])
            class_names = self._plan.model.card.class_names
            self._tracker.log_metrics(self._batch_run, run_metrics(batch, list(reports), class_names))
            log_batch_files(self._tracker, self._batch_run, str(self._params["out"]), report_files, self._staging)
            self._tracker.end(self._batch_run)
        except BaseException:
            self._broken = True
            raise
        self._finished = True
        return LoggedRuns(self._batch_run, tuple((r.name, self._image_runs[r.name]) for r in reports))

    def close(self) -> None:
        """Stop the background thread; end the parent run FAILED unless ``finish`` ended it; close the tracker."""
        self._thread.shutdown(wait=True, cancel_futures=True)
        if not self._finished:
            self._abandon()
        self._trackers.close()
        shutil.rmtree(self._staging, ignore_errors=True)

    def _submit(self, call: Callable[..., None], *args: Any) -> None:
        self._thread.submit(self._guarded, call, *args)

    def _guarded(self, call: Callable[..., None], *args: Any) -> None:
        if self._broken:
            return
        try:
            call(*args)
        except Exception as exc:  # kept, not raised: finish logs the batch afresh, and reports the fault if it lasts
            self._broken = True
            LOG.warning("MLflow logging paused (%s); the batch's last step logs what is missing", one_line(exc))

    def _start(self) -> None:
        self._tracker = self._trackers.enter_context(self._open_tracker())
        self._batch_run = self._tracker.start_batch(self._params, self._tags)

    def _log_images(self, reports: list[ImageReport]) -> None:
        assert self._tracker is not None
        if reports:
            ids = self._tracker.log_images([image_run(self._plan, r, self._staging) for r in reports])
            self._image_runs.update(zip((r.name for r in reports), ids, strict=True))

    def _restart(self) -> None:
        """After a fault: the partial parent run ends FAILED; a new tracker starts the batch's run afresh."""
        self._abandon()
        self._start()
        self._broken = False

    def _abandon(self) -> None:
        if self._tracker is not None and self._batch_run:
            end_quietly(self._tracker, self._batch_run)
        self._trackers.close()
        self._trackers = ExitStack()
        self._tracker, self._batch_run = None, ""
        self._image_runs.clear()
