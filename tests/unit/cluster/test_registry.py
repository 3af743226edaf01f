"""The backend registry: every kind has a backend, open_cluster dispatches through it, missing extras are one line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from segpipe.cluster import BACKENDS, ClusterHandle, ClusterSpec, open_cluster
from segpipe.cluster.spec import KINDS
from segpipe.errors import ConfigError


def test_every_kind_and_address_has_a_backend() -> None:
    assert set(BACKENDS) == {*KINDS, "address"}


def test_open_cluster_uses_the_registered_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[ClusterSpec] = []

    @contextmanager
    def fake(spec: ClusterSpec) -> Iterator[ClusterHandle]:
        seen.append(spec)
        yield ClusterHandle(None, "slurm", 5, True, "fake")  # type: ignore[arg-type]

    monkeypatch.setitem(BACKENDS, "slurm", fake)
    with open_cluster(ClusterSpec.parse("slurm", 5)) as handle:
        assert handle.description == "fake"
    assert seen == [ClusterSpec("slurm", None, 5)]


@pytest.mark.parametrize(
    ("kind", "module", "message"),
    [
        ("slurm", "dask_jobqueue", "--cluster slurm needs dask-jobqueue: pip install 'segpipe[slurm]'"),
        (
            "kubernetes",
            "dask_kubernetes.operator",
            "--cluster kubernetes needs dask-kubernetes: pip install 'segpipe[kubernetes]'",
        ),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, kind: str, module: str, message: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError, as when not installed
    with pytest.raises(ConfigError) as raised:
        with open_cluster(ClusterSpec.parse(kind)):
            pass
    assert str(raised.value) == message
