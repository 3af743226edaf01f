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


def test_a_tracker_waits_for_the_warm_up_of_its_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a tracker opened while the warm-up thread was still creating a new SQLite store ran the store's
    migrations a second time ("table scorers already exists")."""
    import threading
    import time

    from segpipe.tracking import mlflow as tracking

    uri = f"sqlite:///{tmp_path / 'new.db'}"
    slow = threading.Thread(target=time.sleep, args=(0.5,))  # a warm-up still at work
    monkeypatch.setitem(tracking._WARMING, uri, slow)
    slow.start()
    tracker = MlflowTracker(uri, "segpipe")
    assert not slow.is_alive(), "the tracker must wait for a warm-up still at work"
    assert uri not in tracking._WARMING
    tracker.end(tracker.start_batch({"model": "builtin"}, {}))
    tracking.warm_up(uri, "segpipe").join()  # a real one, on the store the tracker made


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
