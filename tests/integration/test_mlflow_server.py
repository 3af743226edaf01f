"""The model registry and run lineage against a real ``mlflow server`` over HTTP (sqlite store, artifacts served
by the server): a model registered with ``segpipe model register`` runs in the batch flow as
``models:/NAME@champion`` and ``models:/NAME/1`` on a local Dask cluster, gives the same mask as the file itself,
and its run records the exact version; ``segpipe runs show`` reads that back. Credentials in the tracking URI
never reach a param or a tag."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
import zarr

import segpipe
from flows.segment_batch import segment_batch
from segpipe.cli import main
from segpipe.models import resolve_model
from segpipe.models.backends.builtin import BUILTIN_CARD
from segpipe.models.unet import UNet
from segpipe.synthetic import write_sample
from tests.integration.mlflow_server import (
    MLFLOW,
    group_alive,
    listening_addresses,
    local_postgres,
    postgres_binaries,
    serve,
)

pytestmark = pytest.mark.integration

NAME = "segpipe-nuclei"
PASSWORD = "s3cret-Pa55"
EXPERIMENT = "registry-integration"
REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra" / "mlflow"
COMPOSE = INFRA / "docker-compose.yaml"


def _cli(*argv: str) -> tuple[int, str]:
    """``segpipe ARGV``: exit code and stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(list(argv))
    return rc, out.getvalue()


def _with_password(url: str) -> str:
    return url.replace("http://", f"http://alice:{PASSWORD}@", 1)


def _client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in model's state_dict with its JSON card beside it, as a user would have them."""
    folder = tmp_path_factory.mktemp("model")
    shutil.copy(BUILTIN_CARD, folder / "unet.json")
    return Path(shutil.copy(BUILTIN_CARD.with_suffix(".pt"), folder / "unet.pt"))


@pytest.fixture(scope="module")
def registered(mlflow_server: str, weights: Path) -> dict[str, Any]:
    """``segpipe model register`` over HTTP, user:password in the URI: version 1 of NAME, alias champion; its JSON
    (stdout holds that JSON alone: MLflow's run-URL lines, which would show the password, are suppressed)."""
    argv = ["model", "register", str(weights), "--name", NAME, "--alias", "champion", "--json"]
    rc, out = _cli(*argv, "--tracking-uri", _with_password(mlflow_server))
    assert rc == 0, out
    assert PASSWORD not in out, out
    return dict(json.loads(out))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    image, truth = write_sample(tmp_path_factory.mktemp("sample"), 256, seed=3)
    return str(image), str(truth)


def _segment(model: str, sample: tuple[str, str], out: Path, tracking_uri: str | None) -> dict[str, Any]:
    settings = {"model": model, "out": str(out), "tiling": {"chunk": 128}}
    return segment_batch(
        [sample[0]],
        [sample[1]],
        settings,
        cluster="local",
        workers=1,
        tracking_uri=tracking_uri,
        experiment=EXPERIMENT,
    ).to_json()


@pytest.fixture(scope="module")
def by_file(registered: dict[str, Any], weights: Path, sample: tuple[str, str], tmp_path_factory: Any) -> dict:
    """The same model from its local file, not tracked: the reference mask."""
    return _segment(str(weights), sample, tmp_path_factory.mktemp("by-file"), None)


@pytest.fixture(scope="module")
def by_alias(registered: dict[str, Any], mlflow_server: str, sample: tuple[str, str], tmp_path_factory: Any) -> dict:
    return _segment(f"models:/{NAME}@champion", sample, tmp_path_factory.mktemp("by-alias"), mlflow_server)


def _mask(report: dict[str, Any]) -> np.ndarray:
    assert report["failures"] == [], report["failures"]
    return np.asarray(zarr.open_array(report["images"][0]["mask"], mode="r")[:])


def test_register_over_http_gives_version_1_with_alias(
    registered: dict[str, Any], weights: Path, mlflow_server: str
) -> None:
    assert (registered["name"], registered["version"], registered["uri"]) == (NAME, 1, f"models:/{NAME}/1")
    assert registered["alias"] == "champion"
    assert registered["format"] == "state_dict"
    assert registered["sha256"] == resolve_model(weights).sha256
    assert registered["tracking_uri"] == mlflow_server


def test_alias_run_records_the_exact_version_and_matches_the_file(
    by_alias: dict[str, Any], by_file: dict[str, Any], registered: dict[str, Any], mlflow_server: str
) -> None:
    assert np.array_equal(_mask(by_alias), _mask(by_file))
    assert by_alias["images"][0]["dice"][1] > 0.8
    run = _client(mlflow_server).get_run(by_alias["mlflow_run_id"])
    params, tags = run.data.params, run.data.tags
    assert params["model_uri"] == f"models:/{NAME}@champion"
    assert (params["model_registry_name"], params["model_registry_version"]) == (NAME, "1")
    assert params["model_sha256"] == tags["segpipe.model_sha256"] == registered["sha256"]
    assert params["model_format"] == "state_dict"
    assert params["model_registry_source"].startswith("mlflow-artifacts:/")  # served by the server
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")


def test_artifacts_download_from_the_server(by_alias: dict[str, Any], mlflow_server: str, tmp_path: Path) -> None:
    from mlflow.artifacts import download_artifacts

    client = _client(mlflow_server)
    image = by_alias["images"][0]
    for leaf in ("metrics.json", "preview.png"):
        got = download_artifacts(
            run_id=image["mlflow_run_id"], artifact_path=leaf, tracking_uri=mlflow_server, dst_path=str(tmp_path)
        )
        assert Path(got).read_bytes() == (Path(by_alias["out"]) / image["name"] / leaf).read_bytes()
    batch_id = by_alias["mlflow_run_id"]
    reports = [a.path for a in client.list_artifacts(batch_id, "report")]
    assert {"report/summary.json", "report/per_image.csv", "report/confusion.png"} <= set(reports)
    for path in [*reports, "batch.json"]:
        got = download_artifacts(
            run_id=batch_id, artifact_path=path, tracking_uri=mlflow_server, dst_path=str(tmp_path)
        )
        assert Path(got).read_bytes() == (Path(by_alias["out"]) / path).read_bytes()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["mean_dice"] == pytest.approx(image["mean_dice"])


def test_runs_show_reports_the_version_and_lineage(
    by_alias: dict[str, Any], registered: dict[str, Any], mlflow_server: str, sample: tuple[str, str]
) -> None:
    batch_id = by_alias["mlflow_run_id"]
    rc, out = _cli("runs", "show", batch_id, "--tracking-uri", mlflow_server, "--json")
    assert rc == 0
    shown = json.loads(out)
    assert shown["run_id"] == batch_id
    assert shown["status"] == "FINISHED"
    model = shown["model"]
    assert (model["registry_name"], model["registry_version"], model["pinned_uri"]) == (NAME, 1, f"models:/{NAME}/1")
    assert model["sha256"] == registered["sha256"]
    assert model["uri"] == f"models:/{NAME}@champion"
    assert [i["url"] for i in shown["inputs"]] == [sample[0]]
    assert shown["inputs"][0]["fingerprint"], "the input has no fingerprint"
    commit = shown["git_commit"]  # the checkout's commit when the flow ran (HEAD may have moved on since)
    ancestor = subprocess.run(["git", "merge-base", "--is-ancestor", commit, "HEAD"], check=False, capture_output=True)
    assert len(commit) == 40, commit
    assert ancestor.returncode == 0, commit
    assert shown["segpipe_version"] == segpipe.__version__
    assert shown["prefect_flow_run_id"], "no Prefect flow run id recorded"
    assert shown["cluster"], "no cluster recorded"
    assert [i["run_id"] for i in shown["images"]] == [by_alias["images"][0]["mlflow_run_id"]]
    rc, text = _cli("runs", "show", by_alias["images"][0]["mlflow_run_id"], "--tracking-uri", mlflow_server)
    assert rc == 0, text
    assert f"{NAME} version 1 (models:/{NAME}/1)" in text
    assert batch_id in text


def test_pinned_version_with_credentials_in_the_uri_logs_none_of_them(
    by_file: dict[str, Any],
    mlflow_server: str,
    sample: tuple[str, str],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    secret_uri = _with_password(mlflow_server)  # MLflow sends the user info as basic auth; this server ignores it
    report = _segment(f"models:/{NAME}/1", sample, tmp_path / "pinned", secret_uri)
    assert np.array_equal(_mask(report), _mask(by_file))
    assert PASSWORD not in json.dumps(report)
    client = _client(mlflow_server)
    batch = client.get_run(report["mlflow_run_id"])
    assert batch.data.params["model_uri"] == f"models:/{NAME}/1"
    assert batch.data.params["model_registry_version"] == "1"
    children = client.search_runs([batch.info.experiment_id], f"tags.mlflow.parentRunId = '{batch.info.run_id}'")
    assert len(children) == 1
    for run in (batch, *children):
        recorded = json.dumps([run.data.params, run.data.tags, run.info.run_name])
        assert PASSWORD not in recorded
        assert "alice" not in recorded
    rc, out = _cli("runs", "show", batch.info.run_id, "--tracking-uri", secret_uri, "--json")
    assert rc == 0, out
    assert PASSWORD not in out, out
    assert json.loads(out)["model"]["registry_version"] == 1
    printed = capfd.readouterr()
    leaks = [
        line.replace(PASSWORD, "<password>") for line in (printed.out + printed.err).splitlines() if PASSWORD in line
    ]
    assert not leaks, f"{len(leaks)} printed line(s) show the password, e.g. {leaks[0][:160]!r}"


def test_a_newer_version_leaves_the_alias_where_it_was(
    registered: dict[str, Any], mlflow_server: str, tmp_path: Path
) -> None:
    """Version 2: the same U-Net traced to TorchScript, card beside it; champion still resolves to version 1."""
    card = json.loads(BUILTIN_CARD.read_text())
    net = UNet(
        card["in_channels"], card["num_classes"], base=card["architecture"]["base"], depth=card["architecture"]["depth"]
    )
    net.load_state_dict(torch.load(BUILTIN_CARD.with_suffix(".pt"), weights_only=True))
    traced = torch.jit.trace(net.eval(), torch.zeros(1, 1, 64, 64))  # no size-dependent branches: any size works
    torch.jit.save(traced, str(tmp_path / "unet_ts.pt"))
    (tmp_path / "unet_ts.json").write_text(json.dumps({k: v for k, v in card.items() if k != "architecture"}))
    rc, out = _cli("model", "register", str(tmp_path / "unet_ts.pt"), "--name", NAME, "--tracking-uri", mlflow_server)
    assert (rc, out) == (0, f"registered {NAME} version 2 (models:/{NAME}/2)\n")
    champion = resolve_model(f"models:/{NAME}@champion", tracking_uri=mlflow_server)
    second = resolve_model(f"models:/{NAME}/2", tracking_uri=mlflow_server)
    assert champion.registry is not None
    assert champion.registry.version == 1
    assert champion.format == "state_dict"
    assert second.format == "torchscript"
    assert second.card.normalization == "percentile"


def test_server_sh_serves_on_loopback_and_stops_with_its_whole_process_group(tmp_path: Path) -> None:
    """infra/mlflow/server.sh for real: it listens on 127.0.0.1 only, and nothing of it outlives stop()."""

    def launcher(port: int) -> tuple[list[str], dict[str, str]]:
        return ["bash", str(INFRA / "server.sh"), str(tmp_path / "store")], {
            "MLFLOW_PORT": str(port),
            "MLFLOW_WORKERS": "1",
        }

    with serve(launcher, tmp_path / "logs") as server:
        pgid = server.process.pid
        port = int(server.url.rsplit(":", 1)[1])
        assert listening_addresses(port) == {"127.0.0.1"}
        assert (tmp_path / "store" / "mlflow.db").is_file(), "the server made no store"
        assert group_alive(pgid), "the server's process group died while serving"
    deadline = time.monotonic() + 10
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(pgid)


# The team server spec (infra/mlflow/docker-compose.yaml), read as Docker Compose reads it.
_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SECRETS = ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``$$`` substitution."""

    def value(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name, op, arg = match["name"], match["op"] or "", match["arg"] or ""
        given = env.get(name)
        unset = given is None or (op.startswith(":") and given == "")
        if unset and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if unset and op.endswith("-") else (given or "")

    return _VARIABLE.sub(value, text)


def _resolved(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_resolved(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _resolved(item, env) for key, item in node.items()}
    return node


def compose(env: dict[str, str]) -> dict[str, Any]:
    """The compose file with ``env`` substituted into it (as ``docker compose config`` would)."""
    return dict(_resolved(yaml.safe_load(COMPOSE.read_text()), env))


def _example_env() -> dict[str, str]:
    rows = [line.split("=", 1) for line in (INFRA / ".env.example").read_text().splitlines()]
    return {row[0].strip(): row[1].strip() for row in rows if len(row) == 2 and not row[0].startswith("#")}


def _flags(command: list[str]) -> dict[str, str]:
    return dict(item.removeprefix("--").split("=", 1) for item in command if item.startswith("--") and "=" in item)


def test_compose_file_parses_and_needs_its_secrets() -> None:
    spec = compose({name: "x" * 12 for name in SECRETS})
    assert set(spec["services"]) == {"postgres", "minio", "bucket", "mlflow"}
    assert set(spec["volumes"]) == {"postgres-data", "minio-data"}
    assert spec["services"]["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for secret in SECRETS:  # no default: compose refuses to start without .env
        with pytest.raises(KeyError, match=secret):
            compose({name: "x" * 12 for name in SECRETS if name != secret})


@pytest.mark.parametrize("source", ["defaults", ".env.example"])
def test_every_published_port_binds_to_loopback(source: str) -> None:
    env = {name: "x" * 12 for name in SECRETS} if source == "defaults" else _example_env()
    published = {}
    for name, service in compose(env)["services"].items():
        for port in service.get("ports", []):
            host_ip, host_port, container_port = str(port).rsplit(":", 2)
            published[(name, container_port)] = (host_ip, int(host_port))
    assert set(published) == {("minio", "9000"), ("minio", "9001"), ("mlflow", "5000")}  # PostgreSQL: none
    assert {ip for ip, _ in published.values()} == {"127.0.0.1"}
    assert published[("mlflow", "5000")][1] == 5000


def test_mlflow_command_uses_postgres_and_served_s3_artifacts_with_no_password_in_it() -> None:
    env = {**_example_env(), "POSTGRES_PASSWORD": "pw-in-env-only"}
    mlflow = compose(env)["services"]["mlflow"]
    flags = _flags(mlflow["command"])
    assert mlflow["command"][:2] == ["mlflow", "server"]
    assert flags["backend-store-uri"] == "postgresql://mlflow@postgres:5432/mlflow"
    assert flags["artifacts-destination"] == "s3://mlflow/artifacts"
    assert "default-artifact-root" not in flags
    assert "no-serve-artifacts" not in mlflow["command"]
    assert mlflow["environment"]["PGPASSWORD"] == "pw-in-env-only"  # libpq reads it; ps and logs never show it
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_no_literal_secret_and_the_env_file_is_never_committed() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", str(value)), (name, key, value)  # required, no default
    assert not re.search(r"://[^/\s@$]+:[^/\s@$]+@", COMPOSE.read_text())  # no user:password@ in any URL
    example = _example_env()
    assert {example[name] for name in SECRETS} <= {"change-me", "change-me-too"}
    referenced = {m["name"] for m in _VARIABLE.finditer(COMPOSE.read_text()) if m["name"]}
    assert referenced <= set(example)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(INFRA / ".env")], cwd=INFRA, check=False)
    assert ignored.returncode == 0


def test_server_image_pins_the_project_versions() -> None:
    pins = dict(re.findall(r"^([\w-]+)==(\S+)$", (REPO / "constraints.txt").read_text(), re.MULTILINE))
    dockerfile = (INFRA / "Dockerfile").read_text()
    for package in ("mlflow", "SQLAlchemy", "boto3"):
        assert f"{package}=={pins[package]}" in dockerfile
    assert "psycopg[binary]" in dockerfile  # SQLAlchemy 2.1's default driver for postgresql:// URIs
    images = {service.get("image") for service in compose(_example_env())["services"].values()}
    assert f"segpipe/mlflow-server:{pins['mlflow']}" in images


def _on_loopback(node: Any, services: dict[str, str]) -> Any:
    """``node`` with the compose network's service addresses replaced by the test's loopback services."""
    if isinstance(node, str):
        for address, replacement in services.items():
            node = node.replace(address, replacement)
        return node
    if isinstance(node, list):
        return [_on_loopback(item, services) for item in node]
    if isinstance(node, dict):
        return {key: _on_loopback(item, services) for key, item in node.items()}
    return node


def test_team_server_spec_runs_on_postgresql_with_s3_artifacts(s3_server: str, weights: Path, tmp_path: Path) -> None:
    """The compose file's own bucket and mlflow commands and environments, run for real on this machine: a
    PostgreSQL cluster and an S3 API (moto, standing in for MinIO) on loopback. A model registered through the
    server lands in the database and the bucket, and resolves back; the password shows in no command or log."""
    if postgres_binaries() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    psycopg = pytest.importorskip("psycopg", reason="SQLAlchemy's PostgreSQL driver: pip install 'psycopg[binary]'")
    import boto3

    password, bucket = f"pg-{uuid.uuid4().hex}", f"segpipe-team-{uuid.uuid4().hex[:12]}"
    services = compose({**_example_env(), "POSTGRES_PASSWORD": password, "MLFLOW_BUCKET": bucket})["services"]
    with local_postgres("mlflow", password, "mlflow") as pg_port:
        loopback = {"postgres:5432": f"127.0.0.1:{pg_port}", "http://minio:9000": s3_server}
        script = _on_loopback(services["bucket"], loopback)
        subprocess.run(
            [sys.executable, *script["command"][1:]], env={**os.environ, **script["environment"]}, check=True
        )
        mlflow = _on_loopback(services["mlflow"], loopback)
        assert password not in json.dumps(mlflow["command"])

        def launcher(port: int) -> tuple[list[str], dict[str, str]]:
            local = {"host": "127.0.0.1", "port": str(port), "workers": "1"}  # this test stays on loopback
            flags = {**_flags(mlflow["command"]), **local}
            return [str(MLFLOW), "server", *(f"--{key}={value}" for key, value in flags.items())], mlflow["environment"]

        with serve(launcher, tmp_path / "server") as server:
            argv = ["model", "register", str(weights), "--name", "team-unet", "--alias", "champion", "--json"]
            rc, out = _cli(*argv, "--tracking-uri", server.url)
            assert rc == 0, out
            ref = resolve_model("models:/team-unet@champion", tracking_uri=server.url)
            assert ref.sha256 == json.loads(out)["sha256"]
            assert ref.registry is not None
        keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
        assert any(key.startswith("artifacts/") and key.endswith("/model/unet.pt") for key in keys), keys
        with psycopg.connect(host="127.0.0.1", port=pg_port, user="mlflow", password=password, dbname="mlflow") as db:
            with db.cursor() as cursor:
                cursor.execute("SELECT name, version FROM model_versions")
                assert cursor.fetchall() == [("team-unet", 1)]
        assert password not in server.log.read_text(errors="replace")
