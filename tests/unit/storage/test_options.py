"""Store configuration comes from each process's environment, the standard ways, checked against a real S3
server (moto); transient I/O errors are told apart from missing data (segpipe/storage/options.py)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import tifffile

from segpipe.errors import ConfigError, InputError
from segpipe.io.images import close_images, open_image
from segpipe.storage import is_transient, location, storage_options
from segpipe.storage.options import filesystem

DEAD_ENDPOINT = "http://127.0.0.1:1"  # nothing listens on port 1: connections are refused at once


def test_aws_endpoint_url_becomes_the_s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ENDPOINT_URL_S3", "FSSPEC_S3", "FSSPEC_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://general:1")
    assert storage_options("s3")["endpoint_url"] == "http://general:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-only:1")
    assert storage_options("s3")["endpoint_url"] == "http://s3-only:1"
    monkeypatch.setenv("FSSPEC_S3_ENDPOINT_URL", "http://fsspec:1")  # fsspec's config, named explicitly, wins
    assert storage_options("s3")["endpoint_url"] == "http://fsspec:1"
    monkeypatch.delenv("FSSPEC_S3_ENDPOINT_URL")
    monkeypatch.setenv("FSSPEC_S3", '{"client_kwargs": {"endpoint_url": "http://json:1"}, "anon": true}')
    assert storage_options("s3") == {"client_kwargs": {"endpoint_url": "http://json:1"}, "anon": True}
    assert storage_options("memory") == {}


@pytest.fixture
def s3_object(s3_bucket: str) -> str:
    url = f"{s3_bucket}/hello.txt"
    location(url).write_bytes(b"hello")
    return url


@pytest.mark.parametrize(
    "variables",
    [
        {"FSSPEC_S3_ENDPOINT_URL": "{endpoint}"},
        {"FSSPEC_S3": '{{"endpoint_url": "{endpoint}"}}'},
        {"FSSPEC_S3": '{{"client_kwargs": {{"endpoint_url": "{endpoint}"}}}}'},
    ],
    ids=["FSSPEC_S3_ENDPOINT_URL", "FSSPEC_S3-endpoint_url", "FSSPEC_S3-client_kwargs"],
)
def test_fsspec_variables_reach_the_server(
    s3_server: str, s3_object: str, variables: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", DEAD_ENDPOINT)  # would fail if it were used
    for name, value in variables.items():
        monkeypatch.setenv(name, value.format(endpoint=s3_server))
    assert location(s3_object).read_bytes() == b"hello"


def test_s3fs_honours_aws_endpoint_url_by_itself(s3_server: str, s3_object: str) -> None:
    """botocore reads AWS_ENDPOINT_URL when s3fs builds its client, even without segpipe passing it on."""
    s3fs = pytest.importorskip("s3fs")
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    assert fs.cat_file(s3_object.removeprefix("s3://")) == b"hello"


def test_gcs_without_gcsfs_is_a_config_error() -> None:
    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed")
    with pytest.raises(ConfigError, match=r"segpipe\[gcs\]"):
        filesystem("gs")


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ConnectionResetError("reset by peer"), True),
        (TimeoutError("timed out"), True),
        (OSError("I/O error"), True),
        (FileNotFoundError("gone"), False),
        (PermissionError("denied"), False),
        (ValueError("bad codec"), False),
        (InputError("bad input"), False),
    ],
)
def test_transient_errors_are_told_apart(error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient


def test_botocore_connection_errors_are_transient() -> None:
    exceptions = pytest.importorskip("botocore.exceptions")
    assert is_transient(exceptions.EndpointConnectionError(endpoint_url=DEAD_ENDPOINT))
    assert is_transient(exceptions.ReadTimeoutError(endpoint_url=DEAD_ENDPOINT))
    assert not is_transient(exceptions.NoCredentialsError())


def test_a_read_during_an_outage_stays_retryable(s3_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A worker that loses the store mid-run gets the connection error itself (retryable), not an InputError;
    once the store is back, the same source reads again."""
    data = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    tifffile.imwrite(tmp_path / "a.tif", data, tile=(16, 16))
    url = f"{s3_bucket}/a.tif"
    location(url).write_bytes((tmp_path / "a.tif").read_bytes())
    source = open_image(url)
    close_images()  # the next read opens the file again, now through a dead endpoint
    monkeypatch.setenv("AWS_ENDPOINT_URL", DEAD_ENDPOINT)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(Exception) as info:
        source.read(0, 16, 0, 16)
    assert not isinstance(info.value, InputError), repr(info.value)
    assert is_transient(info.value), repr(info.value)
    monkeypatch.undo()
    np.testing.assert_array_equal(source.read(0, 16, 0, 16)[0], data[:16, :16])
