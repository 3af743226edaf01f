"""Zarr arrays and groups at any location: what io/ and inference.py use instead of ``zarr.open_array(path)``."""

from __future__ import annotations

import os
from typing import Any

import zarr

from segpipe.storage.location import Location, location

Where = str | os.PathLike[str] | Location
OWN_FORMAT = 3  # the Zarr format of every array and group segpipe writes (zarr.create_array's default)


def open_array(url: Where, mode: str = "r", zarr_format: int | None = None) -> zarr.Array[Any]:
    """Open the Zarr array at ``url`` (``mode``: ``r`` read-only, ``r+`` read-write, ``a``, ``w``).

    ``zarr_format=OWN_FORMAT`` for arrays segpipe wrote: zarr then reads ``zarr.json`` only, without also looking for
    version 2 metadata (on an object store: 2 requests instead of 6).
    """
    store = location(url).zarr_store(read_only=mode == "r")
    return zarr.open_array(store, mode=mode, zarr_format=zarr_format)  # type: ignore[arg-type]


def create_array(url: Where, **kwargs: Any) -> zarr.Array[Any]:
    """Create a Zarr array at ``url``; ``kwargs`` are ``zarr.create_array``'s (shape, chunks, dtype, ...)."""
    return zarr.create_array(location(url).zarr_store(), **kwargs)


def open_group(url: Where, mode: str = "r", zarr_format: int | None = None) -> zarr.Group:
    """Open (``a``, ``w``: or create) the Zarr group at ``url``; ``zarr_format=OWN_FORMAT`` for segpipe's groups."""
    store = location(url).zarr_store(read_only=mode == "r")
    return zarr.open_group(store, mode=mode, zarr_format=zarr_format)  # type: ignore[arg-type]
