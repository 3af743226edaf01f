"""Where runs and artifacts go by default: one per-user store, artifacts beside it, never the current folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from segpipe.storage import public_url
from segpipe.tracking import MlflowTracker, default_artifact_root, default_tracking_uri, segpipe_home


def test_default_store_is_per_user_unless_mlflow_tracking_uri_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEGPIPE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert segpipe_home() == (tmp_path / "home").resolve()
    assert default_tracking_uri() == f"sqlite:///{(tmp_path / 'home').resolve()}/mlflow.db"
    monkeypatch.delenv("SEGPIPE_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert segpipe_home() == (tmp_path / "xdg" / "segpipe").resolve()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri() == "http://127.0.0.1:5000"


def test_artifacts_sit_beside_a_sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_artifact_root(f"sqlite:///{tmp_path}/runs/mlflow.db") == str(tmp_path / "runs" / "mlartifacts")
    monkeypatch.chdir(tmp_path)
    assert default_artifact_root("sqlite:///relative.db") == str(tmp_path / "mlartifacts")
    assert default_artifact_root("http://127.0.0.1:5000") is None


def test_tracker_writes_nothing_in_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd, store = tmp_path / "cwd", tmp_path / "store"
    cwd.mkdir()
    store.mkdir()
    monkeypatch.chdir(cwd)
    (tmp_path / "note.txt").write_text("an artifact\n")
    tracker = MlflowTracker(f"sqlite:///{store}/mlflow.db", "isolation")
    run = tracker.start_batch({"model": "m", "images": ["a"]}, {})
    tracker.log_artifact(run, str(tmp_path / "note.txt"))
    tracker.end(run)
    assert list(cwd.iterdir()) == []
    assert [p.name for p in (store / "mlartifacts").rglob("note.txt")] == ["note.txt"]


def test_public_url_hides_credentials() -> None:
    assert public_url("postgresql://user:secret@db:5432/mlflow") == "postgresql://db:5432/mlflow"


def test_the_logging_process_logs_what_a_tracker_in_process_logs(tmp_path: Path) -> None:
    """MLflow's import and store open run in a child started early; its runs land in the same store."""
    from mlflow.tracking import MlflowClient

    from segpipe.tracking import tracker_for, warm_up
    from segpipe.tracking.mlflow import ImageRun
    from segpipe.tracking.process import TrackerProcess

    uri = f"sqlite:///{tmp_path / 'new.db'}"
    warm_up(uri, "segpipe")
    (tmp_path / "metrics.json").write_text("{}")
    with tracker_for(uri, "segpipe") as tracker:
        assert isinstance(tracker, TrackerProcess)
        batch = tracker.start_batch({"model": "builtin", "images": ["a"]}, {"origin": "test"}, {"images": 1.0})
        (image,) = tracker.log_images(
            [ImageRun("a", {"dtype": "uint8"}, {"seconds_infer": 0.5}, (str(tmp_path / "metrics.json"),))]
        )
        tracker.end(batch)
    assert tracker.process.returncode == 0, "the child ends when its tracker is done"
    client = MlflowClient(tracking_uri=uri)
    logged = client.get_run(image)
    assert (logged.data.params, logged.data.metrics) == ({"dtype": "uint8"}, {"seconds_infer": 0.5})
    assert [a.path for a in client.list_artifacts(image)] == ["metrics.json"]
    assert client.get_run(batch).data.tags["origin"] == "test"


def test_a_store_the_logging_process_cannot_open_is_a_tracking_error_here(tmp_path: Path) -> None:
    from segpipe.errors import TrackingError
    from segpipe.tracking import tracker_for, warm_up

    (tmp_path / "file").write_text("not a folder")
    uri = f"sqlite:///{tmp_path / 'file' / 'mlflow.db'}"
    warm_up(uri, "segpipe")
    with pytest.raises(TrackingError, match="cannot create the store"), tracker_for(uri, "segpipe") as tracker:
        tracker.start_batch({"model": "builtin"}, {})


def test_a_logging_process_that_died_is_a_tracking_error_and_the_retry_logs_here(tmp_path: Path) -> None:
    from segpipe.errors import TrackingError
    from segpipe.tracking import tracker_for, warm_up
    from segpipe.tracking.process import TrackerProcess

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    warm_up(uri, "segpipe")
    with pytest.raises(TrackingError, match="logging process exited"), tracker_for(uri, "segpipe") as tracker:
        assert isinstance(tracker, TrackerProcess)
        tracker.process.kill()
        tracker.process.wait()
        tracker.start_batch({"model": "builtin"}, {})
    with tracker_for(uri, "segpipe") as again:  # what a retry of the batch's log step gets
        assert isinstance(again, MlflowTracker)
        again.end(again.start_batch({"model": "builtin"}, {}))


def test_a_tracker_here_and_the_logging_process_share_a_new_store(tmp_path: Path) -> None:
    """Regression: two writers creating one new SQLite store ran its migrations twice ("table scorers already
    exists"); the store is built aside and linked into place, so either may come first."""
    from segpipe.tracking import discard_warm_up, tracker_for, warm_up

    uri = f"sqlite:///{tmp_path / 'new.db'}"
    warm_up(uri, "segpipe")
    here = MlflowTracker(uri, "segpipe")
    here.end(here.start_batch({"model": "builtin"}, {}))
    with tracker_for(uri, "segpipe") as child:
        child.end(child.start_batch({"model": "builtin"}, {}))
    discard_warm_up(uri, "segpipe")  # nothing left to discard: a no-op


def test_a_new_sqlite_store_appears_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a run killed while MLflow created a new SQLite store left a half-migrated file, and every later
    run failed on it ("table assessments already exists"). The store is now built aside and linked into place."""
    from mlflow.store.tracking import sqlalchemy_store

    from segpipe.tracking import create_sqlite_store

    database = tmp_path / "home" / "mlflow.db"
    uri = f"sqlite:///{database}"

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # stands in for the kill, midway through the migrations

    with monkeypatch.context() as patch:
        patch.setattr(sqlalchemy_store.SqlAlchemyStore, "__init__", killed)
        with pytest.raises(KeyboardInterrupt):
            create_sqlite_store(uri)
    assert not database.exists(), "a store killed midway through its migrations must be removed"
    assert list(database.parent.iterdir()) == []
    create_sqlite_store(uri)
    tracker = MlflowTracker(uri, "segpipe")
    tracker.end(tracker.start_batch({"model": "builtin"}, {}))
    assert [p.name for p in database.parent.iterdir() if p.suffix != ".db"] == []  # no partial left beside it


def test_lineage_round_trips_through_its_tags() -> None:
    from segpipe.tracking import InputLineage, Lineage

    lineage = Lineage(
        segpipe_version="0.1.0",
        git_commit="c0ffee",
        model_uri="models:/nuclei@champion",
        model_card="{'name': 'nuclei'}",
        model=(("model_format", "torchscript"), ("model_sha256", "ab" * 32), ("model_registry_version", "3")),
        cluster="LocalCluster, 2 workers",
        run_id="run-1",
        python="3.11.9",
        prefect_flow_run_id="flow-1",
        prefect_deployment="nightly",
        inputs=(InputLineage(0, "/data/a.tif", "fp-a"), InputLineage(1, "s3://bucket/b.tif", "fp-b")),
    )
    tags = lineage.to_tags()
    assert tags["segpipe.input.1.fingerprint"] == "fp-b"
    assert tags["segpipe.model_sha256"] == "ab" * 32
    assert Lineage.from_tags(tags) == lineage


def test_lineage_of_a_run_without_tags_is_empty() -> None:
    from segpipe.tracking import Lineage

    assert Lineage.from_tags({"mlflow.user": "bob"}) == Lineage()


def test_object_counts_become_metrics_per_image_and_summed_per_batch() -> None:
    from dataclasses import replace

    from segpipe.tracking.batch_log import image_metrics, object_totals
    from tests.unit.stages.test_report import report

    names = ("background", "nucleus")
    one = replace(report(scored=False), object_counts=(0, 12), median_areas=(None, 30.5))
    two = replace(one, name="b", object_counts=(0, 5), median_areas=(None, 8.0))
    assert image_metrics(one, names)["objects_nucleus"] == 12.0
    assert image_metrics(one, names)["median_area_nucleus"] == 30.5
    assert object_totals([one, two], names) == {"objects_nucleus": 17.0}
    assert object_totals([report(scored=False)], names) == {}  # no --objects: no object metrics


def test_pixels_left_out_by_a_foreground_become_an_image_metric() -> None:
    from dataclasses import replace

    from segpipe.tracking.batch_log import image_metrics
    from tests.unit.stages.test_report import report

    names = ("background", "nucleus")
    scored = report(scored=True)
    assert scored.evaluation is not None
    assert "background_pixels_excluded" not in image_metrics(scored, names)  # no --foreground
    masked = replace(scored, evaluation=replace(scored.evaluation, background_pixels_excluded=1234))
    assert image_metrics(masked, names)["background_pixels_excluded"] == 1234.0


def test_a_process_started_before_the_store_is_named_writes_nothing_until_then(tmp_path: Path) -> None:
    """The CLI starts MLflow's import before the inputs are checked; a refused run must not create a store."""
    from segpipe.tracking import process as logging_process
    from segpipe.tracking import start_importing, tracker_for, warm_up

    start_importing()
    (spare,) = logging_process._SPARE
    database = tmp_path / "mlflow.db"
    assert spare.alive()
    assert not database.exists(), "no store before one is named"
    warm_up(f"sqlite:///{database}", "segpipe")
    assert logging_process._SPARE == [], "warm_up takes the spare process"
    with tracker_for(f"sqlite:///{database}", "segpipe") as tracker:
        assert tracker is spare
        tracker.end(tracker.start_batch({"model": "builtin"}, {}))
    assert database.exists()
