"""Fixtures for every test: a real S3 server (moto, on loopback), a fresh bucket per test, and a store root
on each backend (local folder, ``memory://``, S3) for tests that must behave the same everywhere."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The server's environment: dummy credentials, the endpoint, and nothing from the user's AWS setup.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "segpipe-test",
    "AWS_SECRET_ACCESS_KEY": "segpipe-test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
S3_UNSET = ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_ROLE_ARN")
BACKENDS = ("local", "memory", "s3")


def _clear_s3_clients() -> None:
    """Close and forget cached S3 filesystems: the next use builds them from the environment."""
    from segpipe.storage import close_filesystems

    close_filesystems()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (a free port) for the session; yields its endpoint URL.

    While it runs, ``AWS_ENDPOINT_URL`` points at it and the AWS variables hold dummy credentials; fsspec's own
    S3 settings are set aside. All is restored, and cached S3 clients dropped, when the session ends.
    """
    pytest.importorskip("s3fs", reason="s3fs is a dev dependency")
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is a dev dependency")
    from fsspec.config import conf

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    names = [*S3_ENV, *S3_UNSET, "AWS_ENDPOINT_URL", *(k for k in os.environ if k.startswith("FSSPEC_S3"))]
    saved_env = {name: os.environ.get(name) for name in names}
    saved_conf = conf.pop("s3", None)
    for name in names:
        os.environ.pop(name, None)
    os.environ.update({**S3_ENV, "AWS_ENDPOINT_URL": endpoint})
    _clear_s3_clients()
    try:
        yield endpoint
    finally:
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if saved_conf is not None:
            conf["s3"] = saved_conf
        _clear_s3_clients()
        server.stop()


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A new, empty bucket on the test server (created with boto3, not with the code under test)."""
    import boto3

    name = f"segpipe-{uuid.uuid4().hex[:16]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty root on each backend: a local folder, a ``memory://`` prefix, an S3 prefix in a new bucket."""
    if request.param == "local":
        yield str(tmp_path / "root")
    elif request.param == "memory":
        from segpipe.storage import location

        url = f"memory://segpipe-test-{uuid.uuid4().hex[:16]}/root"
        yield url
        location(url).parent.remove()
    else:
        yield f"{request.getfixturevalue('s3_bucket')}/root"


@pytest.fixture
def atomic_s3_puts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the test server's PUT atomic, as S3's is: moto checks ``If-None-Match`` and then stores, two steps
    that concurrent requests can interleave (moto/s3/responses.py ``put_object``). The server runs in this
    process, so one lock around its handler serialises every PUT it answers, from any client process."""
    responses = pytest.importorskip("moto.s3.responses")
    lock = threading.Lock()
    put_object = responses.S3Response.put_object

    def locked(self: Any) -> Any:
        with lock:
            return put_object(self)

    monkeypatch.setattr(responses.S3Response, "put_object", locked)
