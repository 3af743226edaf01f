"""The Location conformance suite (``location_suite.py``) run on each backend: a local folder, ``memory://`` and
S3 (a real moto server on loopback)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

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
    def root(self, s3_bucket: str, atomic_s3_puts: None) -> Location:
        return location(f"{s3_bucket}/root")


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
