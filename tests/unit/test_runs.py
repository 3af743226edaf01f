"""``segpipe.runs``: a batch run's lineage read back from a real local MLflow store (sqlite in tmp_path), written
with the params and tags the batch flow logs; ``segpipe runs show`` prints it."""

from __future__ import annotations

import json
import socket
import time

import pytest

from segpipe.cli import main
from segpipe.errors import ConfigError, TrackingError
from segpipe.runs import InputLineage, ModelLineage, check_reachable, read_lineage, render_lineage

pytest.importorskip("mlflow")

SHA = "ab" * 32
SECRET = "hunter2"
# What flows/segment_batch.py logs on a batch run (params, then tags), for a registry model and two inputs.
PARAMS = {
    "model": "segpipe-unet-nuclei",
    "model_uri": "models:/nuclei@champion",
    "model_format": "state_dict",
    "model_sha256": SHA,
    "model_registry_name": "nuclei",
    "model_registry_version": "3",
    "model_registry_source": "mlflow-artifacts:/1/abc/artifacts/model/unet.pt",
    "cluster": "LocalCluster, 1 worker",
    "images": "['/data/a.tif', 's3://bucket/b.tif']",
    "out": f"s3://key:{SECRET}@bucket/out",
    "run_id": "6f1c1f9e-0000-4000-8000-000000000001",
}
TAGS = {
    "segpipe.version": "0.1.0",
    "segpipe.git_commit": "c0ffee" * 6 + "abcd",
    "segpipe.model_uri": "models:/nuclei@champion",
    "segpipe.model_sha256": SHA,
    "segpipe.cluster": "LocalCluster, 1 worker",
    "segpipe.run_id": PARAMS["run_id"],
    "prefect.flow_run_id": PARAMS["run_id"],
    "prefect.deployment": "nightly",
    "segpipe.input.0.url": "/data/a.tif",
    "segpipe.input.0.fingerprint": "fp-a",
    "segpipe.input.1.url": f"s3://key:{SECRET}@bucket/b.tif",
    "segpipe.input.1.fingerprint": "fp-b",
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=uri).create_experiment("segpipe", artifact_location=(root / "artifacts").as_uri())
    return uri


def _run(uri: str, params: dict[str, str], tags: dict[str, str], name: str) -> str:
    from mlflow import MlflowClient
    from mlflow.entities import Param

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("segpipe")
    assert experiment is not None
    run = client.create_run(experiment.experiment_id, tags=tags, run_name=name)
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()])
    return str(run.info.run_id)


@pytest.fixture(scope="module")
def batch(store: str) -> tuple[str, dict[str, str]]:
    """A finished batch run and its two image runs (``a`` scored, ``b`` without truth); returns the ids."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=store)
    batch_id = _run(store, PARAMS, TAGS, "segpipe-unet-nuclei trim x2")
    images = {}
    for name, image in (("b", f"s3://key:{SECRET}@bucket/b.tif"), ("a", "/data/a.tif")):
        tags = {"mlflow.parentRunId": batch_id, "segpipe.image": name}
        images[name] = _run(store, {"image": image, "truth": ""}, tags, name)
        client.set_terminated(images[name])
    client.log_metric(images["a"], "mean_dice", 0.875)
    client.set_terminated(batch_id)
    return batch_id, images


def test_lineage_reads_inputs_model_code_prefect_cluster_and_image_runs(
    store: str, batch: tuple[str, dict[str, str]]
) -> None:
    batch_id, images = batch
    lineage = read_lineage(batch_id, store)
    assert (lineage.run_id, lineage.status, lineage.run_name) == (batch_id, "FINISHED", "segpipe-unet-nuclei trim x2")
    assert lineage.model == ModelLineage(
        "segpipe-unet-nuclei",
        "models:/nuclei@champion",
        "state_dict",
        SHA,
        "nuclei",
        3,
        "mlflow-artifacts:/1/abc/artifacts/model/unet.pt",
    )
    assert lineage.model.pinned_uri == "models:/nuclei/3"
    assert lineage.inputs == (InputLineage(0, "/data/a.tif", "fp-a"), InputLineage(1, "s3://bucket/b.tif", "fp-b"))
    assert (lineage.segpipe_version, lineage.git_commit) == ("0.1.0", TAGS["segpipe.git_commit"])
    assert (lineage.prefect_flow_run_id, lineage.prefect_deployment) == (PARAMS["run_id"], "nightly")
    assert (lineage.segpipe_run_id, lineage.cluster, lineage.out) == (
        PARAMS["run_id"],
        PARAMS["cluster"],
        "s3://bucket/out",
    )
    assert [(i.name, i.run_id, i.image, i.mean_dice) for i in lineage.images] == [
        ("a", images["a"], "/data/a.tif", 0.875),
        ("b", images["b"], "s3://bucket/b.tif", None),
    ]
    assert lineage.tracking_uri == store


def test_an_image_run_id_gives_its_batch(store: str, batch: tuple[str, dict[str, str]]) -> None:
    batch_id, images = batch
    assert read_lineage(images["b"], store) == read_lineage(batch_id, store)


def test_text_and_json_name_the_version_and_never_a_credential(
    store: str, batch: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    batch_id, _ = batch
    assert main(["runs", "show", batch_id, "--tracking-uri", store]) == 0
    text = capsys.readouterr().out
    assert text == render_lineage(read_lineage(batch_id, store)) + "\n"
    assert "  registry   nuclei version 3 (models:/nuclei/3)" in text
    assert f"sha256     {SHA}" in text
    assert "deployment nightly" in text
    assert "fingerprint fp-b" in text
    assert main(["runs", "show", batch_id, "--tracking-uri", store, "--json"]) == 0
    shown = capsys.readouterr().out
    values = json.loads(shown)
    assert values["model"]["registry_version"] == 3
    assert values["model"]["pinned_uri"] == "models:/nuclei/3"
    assert values["inputs"][1] == {"index": 1, "url": "s3://bucket/b.tif", "fingerprint": "fp-b"}
    assert SECRET not in text
    assert SECRET not in shown


def test_a_run_without_lineage_tags_falls_back_to_its_params(store: str) -> None:
    run_id = _run(store, {"model": "old", "images": "['/x.tif']"}, {}, "old run")
    lineage = read_lineage(run_id, store)
    assert lineage.inputs == (InputLineage(0, "/x.tif", ""),)
    assert lineage.model.pinned_uri is None
    assert lineage.git_commit == ""
    assert lineage.images == ()
    text = render_lineage(lineage)
    assert "registry" not in text
    assert "git -" in text
    assert "fingerprint -" in text


def test_an_unknown_run_is_one_line_and_exit_2(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="0123456789abcdef: no such run in MLflow at sqlite:///"):
        read_lineage("0123456789abcdef", store)
    assert main(["runs", "show", "0123456789abcdef", "--tracking-uri", store]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_server_fails_fast_without_its_password(capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"http://bob:{SECRET}@127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingError, match=r"MLflow at http://127\.0\.0\.1:\d+: unreachable") as caught:
        check_reachable(uri)
    assert SECRET not in str(caught.value)
    assert main(["runs", "show", "abc", "--tracking-uri", uri]) == 5
    captured = capsys.readouterr()
    assert captured.out == ""
    assert SECRET not in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert time.monotonic() - started < 30  # MLflow's client alone would retry for minutes


def test_a_non_http_store_needs_no_reachability_check() -> None:
    check_reachable("sqlite:////nonexistent/mlflow.db")  # nothing to connect to: no error here


def test_the_reachability_check_verifies_tls_as_mlflow_does(monkeypatch: pytest.MonkeyPatch) -> None:
    from segpipe.tracking.reader import _tls_verify

    monkeypatch.delenv("MLFLOW_TRACKING_INSECURE_TLS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH", raising=False)
    assert _tls_verify() is True
    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", "/etc/ssl/team-ca.pem")
    assert _tls_verify() == "/etc/ssl/team-ca.pem"
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
    assert _tls_verify() is False
