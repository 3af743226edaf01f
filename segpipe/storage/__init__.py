"""Where bytes live: the only package that knows about filesystems, object stores and fsspec.

A URL (``/abs/path``, ``relative/path``, ``file://``, ``s3://``, ``gs://``, ``memory://``) becomes a
``Location`` (a ``LocalLocation``, ``S3Location`` or ``FsspecLocation``, picked by ``location(url)``); from it
come zarr stores, file handles, atomic and conditional writes and input identities. How stores are configured
(endpoints, credentials) is written in ``segpipe.storage.options``; ``public_url`` hides credentials.
"""

from segpipe.storage.arrays import OWN_FORMAT, create_array, open_array, open_group, stored_chunks
from segpipe.storage.location import FsspecLocation, InputIdentity, LocalLocation, Location, S3Location, location
from segpipe.storage.options import close_filesystems, is_transient, storage_options
from segpipe.storage.urls import public_url

__all__ = [
    "OWN_FORMAT",
    "FsspecLocation",
    "InputIdentity",
    "LocalLocation",
    "Location",
    "S3Location",
    "close_filesystems",
    "create_array",
    "is_transient",
    "location",
    "open_array",
    "open_group",
    "public_url",
    "storage_options",
    "stored_chunks",
]
