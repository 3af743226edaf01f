"""ClusterSpec parsing, its one-line errors, and what a ClusterHandle says without credentials."""

from __future__ import annotations

import pytest

from segpipe.cluster import ClusterHandle, ClusterSpec
from segpipe.errors import ConfigError
from segpipe.storage import public_url


@pytest.mark.parametrize("kind", ["local", "cuda", "slurm", "kubernetes", " CUDA "])
def test_backend_kinds_parse_without_an_address(kind: str) -> None:
    assert ClusterSpec.parse(kind, 3) == ClusterSpec(kind.strip().lower(), None, 3)


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "tls://scheduler.example.org:8786", "tcp://[::1]:0"])
def test_scheduler_addresses_parse_as_kind_address(address: str) -> None:
    spec = ClusterSpec.parse(address)
    assert (spec.kind, spec.address, spec.workers) == ("address", address, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sge", "expected local, cuda, slurm, kubernetes, tcp://HOST:PORT or tls://HOST:PORT"),
        ("127.0.0.1:8786", r"expected local, cuda.* \(did you mean tcp://127.0.0.1:8786\?\)"),
        ("http://127.0.0.1:8786", "starts with tcp:// or tls://"),
        ("ucx://10.0.0.1:8786", "starts with tcp:// or tls://"),
        ("tcp://127.0.0.1:port", "port is not a number"),
        ("tcp://127.0.0.1:99999", "port is not a number"),
        ("tcp://:8786", "no host"),
    ],
)
def test_anything_else_is_a_one_line_config_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        ClusterSpec.parse(text)
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith("--cluster ")


def test_errors_never_echo_a_password() -> None:
    with pytest.raises(ConfigError) as raised:
        ClusterSpec.parse("http://alice:s3cret@127.0.0.1:8786")
    assert "s3cret" not in str(raised.value)
    assert "alice" not in str(raised.value)


@pytest.mark.parametrize("workers", [0, -2])
def test_workers_must_be_positive(workers: int) -> None:
    with pytest.raises(ConfigError, match="at least 1 worker"):
        ClusterSpec.parse("local", workers)


def test_a_spec_built_directly_is_checked_too() -> None:
    with pytest.raises(ConfigError, match="cluster kind 'gpu'"):
        ClusterSpec("gpu")
    with pytest.raises(ConfigError, match="only 'address' takes one"):
        ClusterSpec("local", "tcp://127.0.0.1:8786")
    with pytest.raises(ConfigError, match="only 'address' takes one"):
        ClusterSpec("address")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("tcp://alice:s3cret@10.0.0.1:8786", "tcp://10.0.0.1:8786"),
        ("tls://token@host:8786?key=abc#frag", "tls://host:8786#frag"),
        ("tcp://10.0.0.1:8786", "tcp://10.0.0.1:8786"),
        ("alice:pw@host:1", "host:1"),
    ],
)
def test_public_url_strips_credentials_from_addresses(address: str, public: str) -> None:
    assert public_url(address) == public


def test_describe_is_the_kind_or_the_public_address() -> None:
    assert ClusterSpec.parse("slurm").describe() == "slurm"
    assert ClusterSpec.parse("tcp://alice:s3cret@10.0.0.1:8786").describe() == "tcp://10.0.0.1:8786"


def test_only_gpu_clusters_ask_for_a_gpu_and_only_for_inference() -> None:
    gpu = ClusterHandle(client=None, kind="cuda", workers=2, gpu=True, description="")  # type: ignore[arg-type]
    cpu = ClusterHandle(client=None, kind="local", workers=2, gpu=False, description="")  # type: ignore[arg-type]
    assert gpu.task_resources == {"infer": {"GPU": 1}}
    assert cpu.task_resources == {}
