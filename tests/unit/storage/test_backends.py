"""The Location conformance suite (``location_suite.py``) run on each backend: a local folder, ``memory://`` and
S3 (a real moto server on loopback)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from segpipe.storage import FsspecLocation, LocalLocation, Location, S3Location, location

from .location_suite import LocationSuite


class TestLocalLocation(LocationSuite):
    backend: ClassVar[type[Location]] = LocalLocation

    @pytest.fixture
    def root(self, tmp_path: Path) -> Location:
        return location(tmp_path / "root")


class TestMemoryLocation(LocationSuite):
    backend: ClassVar[type[Location]] = FsspecLocation
    across_processes: ClassVar[bool] = False  # memory:// lives in one process

    @pytest.fixture
    def root(self) -> Iterator[Location]:
        root = location(f"memory://segpipe-test-{uuid.uuid4().hex[:16]}/root")
        yield root
        root.parent.remove()


class TestS3Location(LocationSuite):
    backend: ClassVar[type[Location]] = S3Location

    @pytest.fixture
    def root(self, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> Location:
        _serialise_moto_puts(monkeypatch)
        return location(f"{s3_bucket}/root")


def _serialise_moto_puts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the test server's PUT atomic, as S3's is: moto checks ``If-None-Match`` and then stores, two steps
    that concurrent requests can interleave (moto/s3/responses.py ``put_object``). The server runs in this
    process, so one lock around its handler serialises every PUT it answers."""
    responses = pytest.importorskip("moto.s3.responses")
    lock = threading.Lock()
    put_object = responses.S3Response.put_object

    def locked(self: Any) -> Any:
        with lock:
            return put_object(self)

    monkeypatch.setattr(responses.S3Response, "put_object", locked)


def test_the_factory_picks_a_class_per_protocol(tmp_path: Path) -> None:
    assert type(location(tmp_path)) is LocalLocation
    assert type(location("s3://bucket/key")) is S3Location
    assert type(location("memory://a/b")) is FsspecLocation


def test_capabilities_are_declared_on_the_classes() -> None:
    assert LocalLocation.supports_conditional_create
    assert LocalLocation.supports_rename
    assert S3Location.supports_conditional_create
    assert not S3Location.supports_rename
    assert not FsspecLocation.supports_conditional_create


def test_a_backend_class_refuses_another_backends_url(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="LocalLocation does not serve s3://"):
        LocalLocation("s3://bucket/key")
    with pytest.raises(ValueError, match="S3Location does not serve memory://"):
        S3Location("memory://a/b")
    with pytest.raises(ValueError, match="FsspecLocation does not serve file://"):
        FsspecLocation(str(tmp_path))


def test_the_interface_cannot_be_built_directly() -> None:
    with pytest.raises(TypeError):
        Location("s3://bucket/key")  # type: ignore[abstract]
