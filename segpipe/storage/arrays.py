"""Zarr arrays and groups at any location: what io/ and inference.py use instead of ``zarr.open_array(path)``."""

from __future__ import annotations

import os
from typing import Any

import zarr
from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
from zarr.core.metadata import ArrayV3Metadata
from zarr.core.sync import collect_aiterator

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


def stored_chunks(array: zarr.Array[Any]) -> frozenset[tuple[int, ...]] | None:
    """The chunk-grid indices of ``array``'s chunks that are stored (one listing of its ``c/`` prefix).

    A chunk that is not stored reads as the array's fill value (zarr writes no chunk equal to it). None when the
    array's keys are not zarr v3's default ``c/i/j/...`` of unsharded chunks (the caller then treats every chunk as
    stored).
    """
    if not isinstance(array.metadata, ArrayV3Metadata) or array.shards is not None:
        return None
    encoding = array.metadata.chunk_key_encoding
    if not isinstance(encoding, DefaultChunkKeyEncoding) or encoding.separator != "/":
        return None
    root = array.store_path.path
    prefix = f"{root}/c/" if root else "c/"
    found: set[tuple[int, ...]] = set()
    for key in collect_aiterator(array.store_path.store.list_prefix(prefix)):
        parts = key[len(prefix) :].split("/")
        if len(parts) == array.ndim and all(part.isdigit() for part in parts):
            found.add(tuple(int(part) for part in parts))
    return frozenset(found)
