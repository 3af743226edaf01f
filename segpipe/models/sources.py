"""Reading model bytes from where the user said they are: a local path, or a URL through ``segpipe.storage``.

``segpipe.storage`` (the one module that knows where bytes live) is imported lazily; while it is absent, URLs
are read with ``fsspec.open``.
"""

from __future__ import annotations

from typing import Any

from segpipe.errors import ModelError


def is_local(uri: str) -> bool:
    """A plain filesystem path (no ``scheme://``)."""
    return "://" not in uri


def read_bytes(uri: str) -> bytes:
    """All bytes at ``uri``; raises ``FileNotFoundError`` when nothing is there, ``OSError`` when unreadable."""
    if is_local(uri):
        with open(uri, "rb") as handle:
            return handle.read()
    return _location(uri).read_bytes()


def read_optional(uri: str) -> bytes | None:
    """The bytes at ``uri``, or None when nothing is there."""
    try:
        return read_bytes(uri)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _location(uri: str) -> Any:
    """``segpipe.storage.location(uri)``, or an fsspec stand-in until that module exists."""
    try:
        from segpipe.storage import location  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return _FsspecLocation(uri)
    return location(uri)


class _FsspecLocation:
    """The one method of a storage location that models need, over ``fsspec.open``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def read_bytes(self) -> bytes:
        """All bytes of the file."""
        try:
            import fsspec
        except ImportError:
            raise ModelError(f"{self.uri}: reading a model from a URL needs fsspec (pip install fsspec)") from None
        with fsspec.open(self.uri, "rb") as handle:
            return handle.read()
