"""Filesystems for URL protocols, configured from the environment of the process that uses them.

Nothing here is pickled: each process (CLI, scheduler, every Dask worker) resolves its own options when it first
touches a store, so credentials stay in each machine's environment and never travel in a task graph.

What configures a store (checked against s3fs 2026.9.0, aiobotocore 3.10.0, botocore 1.43 and moto 5.2.5):

- ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``:
  read by botocore when s3fs creates its client (s3fs passes no credentials of its own unless told to).
- ``AWS_ENDPOINT_URL`` (or the S3-only ``AWS_ENDPOINT_URL_S3``): honoured by botocore >= 1.31 through s3fs as is.
  segpipe also passes it to s3fs as ``endpoint_url`` (unless fsspec's config names an endpoint), so that
  fsspec's instance cache keys on the endpoint: a test server restarted on another port gets a new client.
- fsspec's own configuration: ``FSSPEC_S3='{"endpoint_url": "http://...", "anon": true}'`` (JSON) or one
  variable per option (``FSSPEC_S3_ENDPOINT_URL=http://...``; the value is parsed as JSON when it can be, so
  ``FSSPEC_S3_ANON=true`` is a boolean), and config files in ``FSSPEC_CONFIG_DIR`` (default
  ``~/.config/fsspec``). fsspec reads these once at import; segpipe re-reads the ``FSSPEC_<PROTOCOL>...``
  variables each time it resolves options, so a value set later in the process counts too.
- ``gs://`` needs gcsfs (``pip install segpipe[gcs]``) and uses Google's usual credentials
  (``GOOGLE_APPLICATION_CREDENTIALS`` or the metadata server); ``memory://`` is one in-process store (tests).

Filesystem instances are cached per process by fsspec; a URL never carries credentials (see ``location``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

import fsspec
from fsspec.asyn import AsyncFileSystem
from fsspec.config import conf as fsspec_conf
from fsspec.config import set_conf_env

from segpipe.errors import ConfigError

S3_PROTOCOLS = ("s3", "s3a")
OBJECT_STORES = (*S3_PROTOCOLS, "gs", "gcs")
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}


def storage_options(protocol: str) -> dict[str, Any]:
    """Options for ``protocol`` from this process's environment (fsspec variables, then the AWS endpoint)."""
    fresh: dict[str, dict[str, Any]] = {}
    set_conf_env(fresh)
    options = dict(fresh.get(protocol, {}))
    if protocol in S3_PROTOCOLS:
        configured = {**fsspec_conf.get(protocol, {}), **options}
        named = "endpoint_url" in configured or "endpoint_url" in (configured.get("client_kwargs") or {})
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint and not named:
            options["endpoint_url"] = endpoint
    return options


def filesystem(protocol: str) -> fsspec.AbstractFileSystem:
    """The (per-process cached) synchronous filesystem for ``protocol``."""
    try:
        return fsspec.filesystem(protocol, **storage_options(protocol))
    except ImportError as exc:
        extra = EXTRAS.get(protocol)
        hint = f" (pip install segpipe[{extra}])" if extra else ""
        raise ConfigError(f"{protocol}://: no filesystem installed for this protocol{hint}: {exc}") from None


def async_filesystem(protocol: str) -> AsyncFileSystem:
    """An asynchronous filesystem for ``protocol`` (what zarr's FsspecStore needs); sync ones are wrapped."""
    cls = fsspec.get_filesystem_class(protocol)
    if getattr(cls, "async_impl", False):
        return fsspec.filesystem(protocol, asynchronous=True, **storage_options(protocol))
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

    return AsyncFileSystemWrapper(filesystem(protocol), asynchronous=True)


def known_protocol(protocol: str) -> bool:
    """Whether fsspec knows ``protocol`` (its implementation may still need installing)."""
    return protocol in fsspec.available_protocols()


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a passing I/O fault worth retrying, not a missing or forbidden object.

    Passing faults are a connection reset or a timeout. Covers builtin OSErrors and the connection errors of botocore
    and aiohttp.
    """
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    if isinstance(exc, (OSError, asyncio.TimeoutError)):
        return True
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__}
    return bool(names & TRANSIENT_CLASSES)


TRANSIENT_CLASSES = frozenset(
    {
        "botocore.exceptions.ConnectionError",  # EndpointConnectionError, ConnectTimeoutError, ...
        "botocore.exceptions.HTTPClientError",  # ReadTimeoutError, ...
        "aiohttp.client_exceptions.ClientConnectionError",
        "aiohttp.client_exceptions.ClientPayloadError",
    }
)


def close_filesystems() -> int:
    """Close the network sessions of this process's cached asynchronous filesystems.

    Those are the ones zarr stores use; every cached object-store filesystem is also forgotten. Call at process or
    worker teardown. Returns how many.
    """
    from zarr.core.sync import sync

    closed = 0
    for protocol in OBJECT_STORES:
        cls = fsspec.registry.get(protocol)  # only classes this process has loaded
        if cls is None:
            continue
        for fs in list(getattr(cls, "_cache", {}).values()):
            client = getattr(fs, "_s3", None)  # s3fs keeps its aiobotocore client here
            if getattr(fs, "asynchronous", False) and client is not None:
                with contextlib.suppress(Exception):  # already closed, or its event loop is gone
                    sync(client.close())
                    closed += 1
        cls.clear_instance_cache()
    return closed
