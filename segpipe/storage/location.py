"""``location(url)``: the ``Location`` of a path or URL, of the backend class that serves its protocol.

The interface is ``segpipe.storage.base.Location``; the backends are ``LocalLocation`` (local paths,
``file://``), ``S3Location`` (``s3://``) and ``FsspecLocation`` (every other fsspec protocol: ``memory://``,
``gs://``, ...). Local URLs are absolute paths without a scheme.
"""

from __future__ import annotations

import os

from segpipe.storage.base import InputIdentity, Location, normalise
from segpipe.storage.local import LocalLocation
from segpipe.storage.remote import FsspecLocation, S3Location
from segpipe.storage.urls import public_url

BACKENDS: tuple[type[Location], ...] = (LocalLocation, S3Location, FsspecLocation)  # the first that serves wins


def location(url_or_path: str | os.PathLike[str] | Location) -> Location:
    """The Location of a path or URL: relative paths become absolute, ``file://`` URLs plain paths.

    Raises:
        ConfigError: an unknown protocol, or credentials inside the URL.
    """
    if isinstance(url_or_path, Location):
        return url_or_path
    url = normalise(os.fspath(url_or_path))
    return backend_for(url.split("://", 1)[0] if "://" in url else "file")(url)


def backend_for(protocol: str) -> type[Location]:
    """The Location class for URLs of ``protocol`` (``file`` for local paths)."""
    return next(cls for cls in BACKENDS if cls.serves(protocol))


__all__ = [
    "BACKENDS",
    "FsspecLocation",
    "InputIdentity",
    "LocalLocation",
    "Location",
    "S3Location",
    "backend_for",
    "location",
    "public_url",
]
