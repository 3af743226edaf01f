"""The batch's live MLflow log (segpipe/tracking/live_log.py): image runs logged as images commit, faults kept.

A recording tracker stands in for MLflow where the order of calls is the point; one test logs to a real SQLite store.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile

from segpipe.errors import TrackingError
from segpipe.stages.plan import BatchPlan, plan_batch
from segpipe.stages.report import ImageReport
from segpipe.stages.results import BatchSummary, RunInfo, summarize_run
from segpipe.stages.settings import RunSettings
from segpipe.tracking import PARENT_TAG, batch_log
from segpipe.tracking.live_log import LiveBatchLog
from segpipe.tracking.mlflow import ImageRun
from tests.unit.stages.test_report import report


class Recorder:
    """A tracker that records its calls; ``fail`` names a call (and, for log_images, an image) that raises."""

    def __init__(self, label: str, fail: tuple[str, str] | None = None) -> None:
        self.label, self.fail = label, fail
        self.calls: list[tuple[Any, ...]] = []
        self.closed = False
        self.image_logged = threading.Event()

    def _check(self, call: str, detail: str = "") -> None:
        if self.fail is not None and self.fail[0] == call and self.fail[1] in ("", detail):
            raise TrackingError(f"MLflow at test: cannot {call} (outage)")

    def start_batch(self, params: dict[str, Any], tags: dict[str, str], metrics: dict[str, float] | None = None) -> str:
        self._check("start_batch")
        self.calls.append(("start_batch", params["model"]))
        return f"{self.label}-batch"

    def log_images(self, runs: Sequence[ImageRun]) -> list[str]:
        for run in runs:
            self._check("log_images", run.name)
        self.calls.append(("log_images", tuple(run.name for run in runs)))
        self.image_logged.set()
        return [f"{self.label}-{run.name}" for run in runs]

    def log_metrics(self, run_id: str, values: dict[str, float]) -> None:
        self._check("log_metrics")
        self.calls.append(("log_metrics", run_id))

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None = None) -> None:
        self.calls.append(("log_artifact", run_id, Path(path).name))

    def log_artifacts(self, run_id: str, directory: str, artifact_path: str) -> None:
        raise AssertionError("not used by a batch log")

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.calls.append(("end", run_id, status))


class Opener:
    """Hands out the given trackers in turn, as ``tracker_for`` would (each closed when its context ends)."""

    def __init__(self, *trackers: Recorder) -> None:
        self.trackers = list(trackers)
        self.opened: list[Recorder] = []

    @contextmanager
    def __call__(self) -> Iterator[Recorder]:
        tracker = self.trackers[len(self.opened)]
        self.opened.append(tracker)
        try:
            yield tracker
        finally:
            tracker.closed = True


@pytest.fixture
def batch(tmp_path: Path) -> tuple[BatchPlan, list[ImageReport], BatchSummary]:
    """A plan of two images, "a" and "b", their reports and the batch's summary."""
    for name in ("a", "b"):
        tifffile.imwrite(tmp_path / f"{name}.tif", np.ones((30, 40), np.uint16))
    settings = RunSettings(out=str(tmp_path / "out"))
    plan = plan_batch([str(tmp_path / "a.tif"), str(tmp_path / "b.tif")], None, settings)
    reports = [replace(report(scored=False), name=name) for name in ("a", "b")]
    run = RunInfo("run-1", datetime.now(UTC), plan.model)
    return plan, reports, summarize_run(settings.out, plan, run, tuple(reports), 1.0, None)


def _live(plan: BatchPlan, opener: Any) -> LiveBatchLog:
    params = batch_log.batch_params(plan, RunSettings(out=str(Path(plan.jobs[0].out_dir).parent)), "local", "run-1")
    return LiveBatchLog(opener, plan, params, batch_log.batch_lineage(plan, params))


def test_an_image_run_is_logged_while_the_batch_runs_and_the_rest_at_its_finish(batch: Any) -> None:
    plan, (a, b), summary = batch
    tracker = Recorder("t")
    live = _live(plan, Opener(tracker))
    live.log_image(a)
    assert tracker.image_logged.wait(30), "the image's run was not logged before the batch's finish"
    logged = live.finish(summary, [a, b], [])  # b: finished earlier, or not handed over meanwhile
    live.close()
    assert tracker.calls == [
        ("start_batch", plan.model.card.name),
        ("log_images", ("a",)),
        ("log_images", ("b",)),
        ("log_metrics", "t-batch"),
        ("log_artifact", "t-batch", "batch.json"),
        ("end", "t-batch", "FINISHED"),
    ]
    assert logged == batch_log.LoggedRuns("t-batch", (("a", "t-a"), ("b", "t-b")))
    assert tracker.closed


def test_an_outage_at_the_start_holds_nothing_and_the_finish_logs_the_batch_afresh(batch: Any) -> None:
    plan, reports, summary = batch
    down, up = Recorder("down", fail=("start_batch", "")), Recorder("up")
    opener = Opener(down, up)
    live = _live(plan, opener)
    for one in reports:
        live.log_image(one)  # returns at once, though nothing can be logged
    logged = live.finish(summary, reports, [])
    live.close()
    assert down.calls == []
    assert down.closed
    assert [c[0] for c in up.calls] == ["start_batch", "log_images", "log_metrics", "log_artifact", "end"]
    assert up.calls[1] == ("log_images", ("a", "b"))
    assert logged.batch == "up-batch"
    assert up.closed


def test_an_outage_mid_batch_ends_the_partial_run_failed_and_logs_every_image_afresh(batch: Any) -> None:
    plan, (a, b), summary = batch
    flaky, fresh = Recorder("flaky", fail=("log_images", "b")), Recorder("fresh")
    live = _live(plan, Opener(flaky, fresh))
    live.log_image(a)
    live.log_image(b)
    logged = live.finish(summary, [a, b], [])
    live.close()
    assert flaky.calls == [
        ("start_batch", plan.model.card.name),
        ("log_images", ("a",)),
        ("end", "flaky-batch", "FAILED"),
    ]
    assert fresh.calls[1] == ("log_images", ("a", "b"))
    assert fresh.calls[-1] == ("end", "fresh-batch", "FINISHED")
    assert logged == batch_log.LoggedRuns("fresh-batch", (("a", "fresh-a"), ("b", "fresh-b")))


def test_a_finish_that_fails_raises_and_its_retry_logs_the_batch_afresh(batch: Any) -> None:
    plan, reports, summary = batch
    flaky, fresh = Recorder("flaky", fail=("log_metrics", "")), Recorder("fresh")
    live = _live(plan, Opener(flaky, fresh))
    with pytest.raises(TrackingError, match="cannot log_metrics"):
        live.finish(summary, reports, [])
    logged = live.finish(summary, reports, [])  # what the batch's log step does on its retry
    live.close()
    assert flaky.calls[-1] == ("end", "flaky-batch", "FAILED")
    assert fresh.calls[-1] == ("end", "fresh-batch", "FINISHED")
    assert logged.batch == "fresh-batch"


def test_a_batch_that_fails_before_its_finish_ends_its_run_failed(batch: Any) -> None:
    plan, (a, _), _ = batch
    tracker = Recorder("t")
    live = _live(plan, Opener(tracker))
    live.log_image(a)
    live.close()
    assert tracker.calls[-1] == ("end", "t-batch", "FAILED")
    assert tracker.closed


def test_a_live_log_in_a_sqlite_store_nests_every_image_run_and_finishes_them(batch: Any, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from segpipe.tracking import MlflowTracker

    plan, reports, summary = batch
    for job in plan.jobs:  # the files an image's run uploads
        Path(job.out_dir).mkdir(parents=True, exist_ok=True)
        Path(job.path("metrics.json")).write_text("{}")
        Path(job.path("preview.png")).write_bytes(b"png")
    Path(plan.jobs[0].out_dir).parent.joinpath("batch.json").write_text("{}")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    live = _live(plan, lambda: nullcontext(MlflowTracker(uri, "segpipe")))
    live.log_image(reports[0])
    logged = live.finish(summary, reports, [])
    live.close()
    client = MlflowClient(uri)
    parent = client.get_run(logged.batch)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["model"] == plan.model.card.name
    assert "megapixels" in parent.data.metrics
    for name, run_id in logged.images:
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags[PARENT_TAG] == logged.batch
        assert run.info.run_name == name
        assert sorted(f.path for f in client.list_artifacts(run_id)) == ["metrics.json", "preview.png"]
