"""``public_url`` removes credentials from every kind of address segpipe prints or records, and nothing else."""

from __future__ import annotations

import pytest

from segpipe.storage import public_url


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("s3://AKIA:secret@bucket/key", "s3://bucket/key"),
        ("https://user:pw@host:9000/x?y=1", "https://host:9000/x?y=1"),
        ("https://user:p@ss@host/x", "https://host/x"),  # an unescaped "@" in the password
        ("s3://bucket/key", "s3://bucket/key"),
    ],
)
def test_storage_urls_lose_their_user_information(url: str, public: str) -> None:
    assert public_url(url) == public


def test_presigned_urls_lose_their_signature_credential_and_token_and_keep_the_rest() -> None:
    url = (
        "https://b.s3.amazonaws.com/k.tif?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20240101"
        "&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600&X-Amz-Signature=ab12&X-Amz-Security-Token=zz"
    )
    expected = "https://b.s3.amazonaws.com/k.tif?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20240101T000000Z&X-Amz-Expires=3600"
    assert public_url(url) == expected


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("https://h/m.pt?token=t0k&v=2", "https://h/m.pt?v=2"),
        ("https://h/m.pt?v=1&api_key=k&password=p;sig=s", "https://h/m.pt?v=1"),
        ("https://h/m.pt#access_token=t", "https://h/m.pt"),
    ],
)
def test_secret_query_and_fragment_parameters_are_removed(url: str, public: str) -> None:
    assert public_url(url) == public


@pytest.mark.parametrize(
    ("uri", "public"),
    [
        ("https://alice:s3cret@mlflow.example.org/api", "https://mlflow.example.org/api"),
        ("http://token@host:5000", "http://host:5000"),
        ("postgresql://user:secret@db:5432/mlflow", "postgresql://db:5432/mlflow"),
        ("mysql+pymysql://u:p@db/mlflow?password=p&charset=utf8", "mysql+pymysql://db/mlflow?charset=utf8"),
        ("sqlite:////data/mlflow.db", "sqlite:////data/mlflow.db"),
        ("databricks", "databricks"),
    ],
)
def test_tracking_uris_hide_credentials(uri: str, public: str) -> None:
    assert public_url(uri) == public


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("tcp://alice:s3cret@10.0.0.1:8786", "tcp://10.0.0.1:8786"),
        ("tls://token@host:8786?key=abc#frag", "tls://host:8786#frag"),
        ("tcp://10.0.0.1:8786", "tcp://10.0.0.1:8786"),
        ("alice:pw@host:1", "host:1"),  # no scheme: what --cluster gets when tcp:// is forgotten
        ("host:8786", "host:8786"),
    ],
)
def test_scheduler_addresses_hide_credentials(address: str, public: str) -> None:
    assert public_url(address) == public


@pytest.mark.parametrize(
    "path", ["/plain/path", "/data/run@2/x.tif", "relative/a@b.tif", "memory://a/b", "https://h/x?#"]
)
def test_paths_are_unchanged(path: str) -> None:
    assert public_url(path) == path


@pytest.mark.parametrize(
    "url", ["s3://AKIA:secret@bucket/key", "alice:pw@host:1", "https://h/k?X-Amz-Signature=ab&x=1"]
)
def test_redacting_twice_changes_nothing(url: str) -> None:
    assert public_url(public_url(url)) == public_url(url)
