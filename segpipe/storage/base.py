"""``Location``, the interface every storage backend implements, and what the backends share.

A Location is one URL (a local path, ``s3://``, ``gs://``, ``memory://``, ...) and what segpipe does with the
bytes there. Each backend is a subclass that declares on the class which protocols it serves and what its store
can do (``supports_conditional_create``, ``supports_rename``), as zarr's stores do (``zarr/abc/store.py``):
``LocalLocation`` (``os``) in ``local.py``, ``FsspecLocation`` and ``S3Location`` in ``remote.py``;
``location(url)`` in ``location.py`` picks one. A Location holds its URL only, so it pickles into task graphs
and compares and hashes by class and URL; filesystems are resolved in the process that uses it.

The ABC lives apart from the factory so that the backends import it without an import cycle.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import os
import posixpath
from dataclasses import dataclass
from typing import IO, Any, ClassVar

from zarr.abc.store import Store

from segpipe.errors import ConfigError, OutputError
from segpipe.storage.options import known_protocol
from segpipe.storage.urls import public_url

LOCAL_PREFIXES = ("file://", "local://")


@dataclass(frozen=True)
class InputIdentity:
    """What an input was when it was read: its URL, size in bytes and the version its store reports.

    ``version`` is ``etag:<ETag>`` (S3), ``crc32c:<value>`` / ``md5:<value>`` (GCS) or ``mtime_ns:<ns>``
    (local, memory); for a directory (a Zarr input), ``tree:<hash>`` over its files' paths, sizes and versions.
    Local versions come from modification times, so a same-size rewrite within one filesystem clock tick
    (milliseconds) goes unseen.
    """

    url: str
    size: int
    version: str


@dataclass(frozen=True)
class Location(abc.ABC):
    """A place for bytes, named by a URL; see ``location`` for the accepted forms.

    A backend implements the abstract methods below. Its class attributes say what its store can do:
    ``supports_conditional_create`` (``create_if_absent`` is atomic across processes and machines) and
    ``supports_rename`` (``staged_write`` moves a finished file into place; without it, one upload).
    """

    url: str
    protocols: ClassVar[tuple[str, ...]] = ()  # the URL schemes this class serves (see ``serves``)
    supports_conditional_create: ClassVar[bool] = False
    supports_rename: ClassVar[bool] = False

    def __post_init__(self) -> None:
        """Normalise ``url``; ValueError when this class does not serve its scheme."""
        object.__setattr__(self, "url", normalise(str(self.url)))
        if not self.serves(self.protocol):
            name = type(self).__name__
            raise ValueError(f"{public_url(self.url)}: {name} does not serve {self.protocol}:// (use location())")

    @classmethod
    def serves(cls, protocol: str) -> bool:
        """Whether this backend handles URLs of ``protocol`` (``file`` for local paths)."""
        return protocol in cls.protocols

    def __str__(self) -> str:
        """The URL."""
        return self.url

    @property
    def protocol(self) -> str:
        """``file`` for local paths, else the URL scheme (``s3``, ``gs``, ``memory``, ...)."""
        return self.url.split("://", 1)[0] if "://" in self.url else "file"

    @property
    def is_local(self) -> bool:
        """Whether this is a path on this machine's filesystem."""
        return self.protocol == "file"

    @property
    @abc.abstractmethod
    def path(self) -> str:
        """The path the filesystem knows this location by (absolute path; ``bucket/key``; ``/key``)."""

    @property
    def name(self) -> str:
        """The last component of the path."""
        return posixpath.basename(self.url.rstrip("/"))

    @property
    def parent(self) -> Location:
        """The location one level up (a bucket or store root is its own parent)."""
        head = posixpath.dirname(self.url)
        return type(self)(head) if self.is_local or "://" in head else self

    def child(self, *parts: str) -> Location:
        """The location ``parts`` below this one (``child("labels", "mask")``)."""
        tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
        return type(self)(f"{self.url.rstrip('/')}/{tail}") if tail else self

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether a file, directory or (object stores) any object under this prefix exists."""

    @abc.abstractmethod
    def is_dir(self) -> bool:
        """Whether this is a directory (object stores: a prefix with objects below it)."""

    @abc.abstractmethod
    def size(self) -> int:
        """Size in bytes of the file here (FileNotFoundError when there is none)."""

    @abc.abstractmethod
    def read_bytes(self) -> bytes:
        """All bytes of the file here (FileNotFoundError when there is none)."""

    @abc.abstractmethod
    def write_bytes(self, data: bytes) -> None:
        """Write ``data`` atomically: readers see the old content or the new, never a part of it."""

    def create_if_absent(self, data: bytes) -> bool:
        """Create the file here holding ``data`` unless something is already there, atomically.

        Of many callers at once, on any machines, exactly one gets True and its bytes are stored; the others get False
        and change nothing. Readers never see a part of ``data``.

        Backends without ``supports_conditional_create`` raise (check the flag first). On object stores a
        request retried after a lost reply can answer False for this call's own write: callers that need to
        know compare the stored bytes with theirs (make them unique, e.g. with a run id).

        Raises:
            OutputError: this store cannot create a file conditionally.
        """
        raise OutputError(
            f"{public_url(self.url)}: this store ({self.protocol}://) cannot create a file only if it is absent "
            "(no conditional writes), so it cannot hold a lease"
        )

    def read_json(self) -> Any:
        """The JSON document stored here."""
        return json.loads(self.read_bytes())

    def write_json(self, obj: Any, indent: int | None = None, default: Any = str) -> None:
        """Write ``obj`` as JSON, atomically (see ``write_bytes``)."""
        self.write_bytes(json.dumps(obj, indent=indent, default=default).encode())

    @abc.abstractmethod
    def staged_write(self) -> contextlib.AbstractContextManager[str]:
        """Yield a local path to write the whole file to; on success it becomes this location atomically.

        On error nothing changes.
        """

    @abc.abstractmethod
    def remove(self) -> None:
        """Delete this file or directory tree; nothing there is fine. A whole bucket is never removed."""

    @abc.abstractmethod
    def listdir(self) -> list[str]:
        """Sorted names directly below this location, from one listing ([] when nothing is there)."""

    @abc.abstractmethod
    def open(self, mode: str = "rb") -> IO[bytes]:
        """A binary file handle (``rb`` or ``wb``)."""

    @abc.abstractmethod
    def zarr_store(self, read_only: bool = False) -> Store:
        """A zarr store rooted here."""

    @abc.abstractmethod
    def identity(self) -> InputIdentity:
        """URL, size and version of the file (or the directory tree) here; FileNotFoundError if missing."""

    @abc.abstractmethod
    def check_writable(self) -> None:
        """Raise ``OutputError`` (one line) unless segpipe can write here."""

    def remove_partial_writes(self) -> int:
        """Delete the temporary files killed writes leave below this directory; return how many.

        Stores that write whole objects leave none: 0.
        """
        return 0

    def _check_mode(self, mode: str) -> None:
        if mode not in ("rb", "wb"):
            raise ValueError(f"{self.url}: mode {mode!r}: only 'rb' and 'wb' are supported")


def normalise(url: str) -> str:
    """Local paths become absolute (no scheme); other URLs lose trailing and doubled slashes.

    Raises:
        ConfigError: an unknown protocol, or credentials inside the URL.
    """
    for prefix in LOCAL_PREFIXES:
        if url.startswith(prefix):
            url = url[len(prefix) :]
            url = url[len("localhost") :] if url.startswith("localhost/") else url
            break
    if "://" not in url:
        return os.path.abspath(os.path.expanduser(url))
    protocol, rest = url.split("://", 1)
    protocol = protocol.lower()
    if "@" in rest.split("/", 1)[0]:
        raise ConfigError(
            f"{public_url(url)}: credentials in a URL are not accepted; set them in the environment "
            "(e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )
    if not known_protocol(protocol):
        raise ConfigError(f"{url}: unknown storage protocol {protocol!r} (use a path, s3://, gs:// or memory://)")
    rest = rest.strip("/")
    return f"{protocol}://{posixpath.normpath(rest) if rest else ''}"


def tree_identity(url: str, members: list[tuple[str, int, str]]) -> InputIdentity:
    """A directory's identity: total size, and a hash over each file's relative path, size and version."""
    digest = hashlib.sha256()
    for relative, size, version in sorted(members):
        digest.update(f"{relative}\0{size}\0{version}\n".encode())
    return InputIdentity(url, sum(m[1] for m in members), f"tree:{digest.hexdigest()[:32]}")
