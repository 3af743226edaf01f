"""Where bytes live: the only package that knows about filesystems, object stores and fsspec.

A URL (``/abs/path``, ``relative/path``, ``file://``, ``s3://``, ``gs://``, ``memory://``) becomes a
``Location``; from it come zarr stores, file handles, atomic writes and input identities. How stores are
configured (endpoints, credentials) is written in ``segpipe.storage.options``.
"""

from segpipe.storage.arrays import OWN_FORMAT, create_array, open_array, open_group
from segpipe.storage.location import InputIdentity, Location, location, public_url
from segpipe.storage.options import close_filesystems, is_transient, storage_options

__all__ = [
    "OWN_FORMAT",
    "InputIdentity",
    "Location",
    "close_filesystems",
    "create_array",
    "is_transient",
    "location",
    "open_array",
    "open_group",
    "public_url",
    "storage_options",
]
