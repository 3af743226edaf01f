"""``Location``: one URL (a local path, ``file://``, ``s3://``, ``gs://``, ``memory://``) and what segpipe does
with the bytes there. Local paths go through ``os`` directly; everything else through an fsspec filesystem.

A Location holds the URL only, so it pickles into task graphs; the filesystem and its options are resolved in
the process that uses it (``segpipe.storage.options``). Local URLs are absolute paths without a scheme.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import fsspec
from zarr.abc.store import Store
from zarr.storage import FsspecStore, LocalStore

from segpipe.errors import ConfigError, OutputError
from segpipe.storage.options import OBJECT_STORES, async_filesystem, filesystem, known_protocol

READ_BLOCK = 2**20  # bytes fetched per range request when reading a remote file (TIFF headers, tiles)
# Temporary files a kill -9 can leave: zarr LocalStore's (``<stem>.<32 hex>.partial``, from ``_atomic_write`` in
# zarr/storage/_local.py) and ``staged_write``'s own (``.<name>.<32 hex>.tmp``).
PARTIAL_WRITE = re.compile(r"(\.[0-9a-f]{32}\.partial|^\..+\.[0-9a-f]{32}\.tmp)$")
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


def public_url(url: str) -> str:
    """``url`` without any ``user:password@`` part (safe to print, log or record)."""
    text = str(url)
    if "://" not in text:
        return text
    parts = urlsplit(text)
    if "@" not in parts.netloc:
        return text
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _normalise(url: str) -> str:
    """Local paths become absolute (no scheme); other URLs lose trailing and doubled slashes."""
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


@dataclass(frozen=True)
class Location:
    """A place for bytes, named by a URL; see ``location`` for the accepted forms."""

    url: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", _normalise(str(self.url)))

    def __str__(self) -> str:
        return self.url

    @property
    def protocol(self) -> str:
        """``file`` for local paths, else the URL scheme (``s3``, ``gs``, ``memory``, ...)."""
        return self.url.split("://", 1)[0] if "://" in self.url else "file"

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    @property
    def path(self) -> str:
        """The path the filesystem knows this location by (absolute path; ``bucket/key``; ``/key``)."""
        if self.is_local:
            return self.url
        return str(fsspec.get_filesystem_class(self.protocol)._strip_protocol(self.url))

    @property
    def name(self) -> str:
        """The last component of the path."""
        return posixpath.basename(self.url.rstrip("/"))

    @property
    def parent(self) -> Location:
        """The location one level up (a bucket or store root is its own parent)."""
        head = posixpath.dirname(self.url)
        return Location(head) if self.is_local or "://" in head else self

    def child(self, *parts: str) -> Location:
        """The location ``parts`` below this one (``child("labels", "mask")``)."""
        tail = "/".join(p.strip("/") for p in parts if p.strip("/"))
        return Location(f"{self.url.rstrip('/')}/{tail}") if tail else self

    def _fs(self) -> fsspec.AbstractFileSystem:
        fs = filesystem(self.protocol)
        fs.invalidate_cache(self.path)  # another process may have written since this one last listed
        return fs

    def exists(self) -> bool:
        """Whether a file, directory or (object stores) any object under this prefix exists."""
        return os.path.exists(self.url) if self.is_local else bool(self._fs().exists(self.path))

    def is_dir(self) -> bool:
        """Whether this is a directory (object stores: a prefix with objects below it)."""
        return os.path.isdir(self.url) if self.is_local else bool(self._fs().isdir(self.path))

    def size(self) -> int:
        """Size in bytes of the file here (FileNotFoundError when there is none)."""
        return os.path.getsize(self.url) if self.is_local else int(self._fs().size(self.path))

    def read_bytes(self) -> bytes:
        if self.is_local:
            with open(self.url, "rb") as handle:
                return handle.read()
        return bytes(self._fs().cat_file(self.path))

    def write_bytes(self, data: bytes) -> None:
        """Write ``data`` atomically: readers see the old content or the new, never a part of it (local: a
        temporary file in the same directory, then ``os.replace``; object stores: one PUT)."""
        if not self.is_local:
            filesystem(self.protocol).pipe_file(self.path, bytes(data))
        elif not data:  # an empty file (a marker) is created in one step: nothing to stage
            os.makedirs(os.path.dirname(self.url), exist_ok=True)
            open(self.url, "wb").close()
        else:
            with self.staged_write() as temporary, open(temporary, "wb") as handle:
                handle.write(data)

    def read_json(self) -> Any:
        return json.loads(self.read_bytes())

    def write_json(self, obj: Any, indent: int | None = None, default: Any = str) -> None:
        """Write ``obj`` as JSON, atomically (see ``write_bytes``)."""
        self.write_bytes(json.dumps(obj, indent=indent, default=default).encode())

    @contextlib.contextmanager
    def staged_write(self) -> Iterator[str]:
        """Yield a local path to write the whole file to; on success it becomes this location atomically
        (local: ``os.replace`` from the same directory; object stores: one upload). On error nothing changes."""
        if self.is_local:
            os.makedirs(os.path.dirname(self.url), exist_ok=True)
            temporary = os.path.join(os.path.dirname(self.url), f".{self.name}.{uuid.uuid4().hex}.tmp")
        else:
            temporary = os.path.join(tempfile.mkdtemp(prefix="segpipe-"), self.name or "upload")
        try:
            yield temporary
            if self.is_local:
                os.replace(temporary, self.url)
            else:
                filesystem(self.protocol).put_file(temporary, self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            if not self.is_local:
                shutil.rmtree(os.path.dirname(temporary), ignore_errors=True)

    def remove(self) -> None:
        """Delete this file or directory tree; nothing there is fine. A whole bucket is never removed."""
        if self.protocol in OBJECT_STORES and "/" not in self.path.strip("/"):
            raise ValueError(f"{self.url}: refusing to remove a whole bucket")
        if not self.is_local:
            with contextlib.suppress(FileNotFoundError):
                self._fs().rm(self.path, recursive=True)
            return
        with contextlib.suppress(FileNotFoundError):  # other failures (permissions) propagate
            if os.path.isdir(self.url) and not os.path.islink(self.url):
                shutil.rmtree(self.url)
            else:
                os.unlink(self.url)

    def listdir(self) -> list[str]:
        """Sorted names directly below this location, from one listing ([] when nothing is there)."""
        if self.is_local:
            try:
                return sorted(os.listdir(self.url))
            except (FileNotFoundError, NotADirectoryError):
                return []
        try:
            entries = self._fs().ls(self.path, detail=False)
        except FileNotFoundError:
            return []
        own = self.path.rstrip("/")
        return sorted({posixpath.basename(str(e).rstrip("/")) for e in entries if str(e).rstrip("/") != own})

    def open(self, mode: str = "rb") -> IO[bytes]:
        """A binary file handle; remote reads are range requests of ``READ_BLOCK`` bytes, read ahead."""
        if mode not in ("rb", "wb"):
            raise ValueError(f"{self.url}: mode {mode!r}: only 'rb' and 'wb' are supported")
        if self.is_local:
            if mode == "wb":
                os.makedirs(os.path.dirname(self.url), exist_ok=True)
            return open(self.url, mode)
        if mode == "wb":
            return filesystem(self.protocol).open(self.path, mode)  # type: ignore[no-any-return]
        return self._fs().open(self.path, mode, block_size=READ_BLOCK, cache_type="readahead")  # type: ignore[no-any-return]

    def zarr_store(self, read_only: bool = False) -> Store:
        """A zarr store rooted here: ``LocalStore`` for local paths, else an ``FsspecStore`` over an async fs."""
        if self.is_local:
            return LocalStore(self.url, read_only=read_only)
        return FsspecStore(async_filesystem(self.protocol), read_only=read_only, path=self.path)

    def identity(self) -> InputIdentity:
        """URL, size and version of the file (or the directory tree) here; FileNotFoundError if missing."""
        if self.is_local:
            return _local_identity(self.url)
        fs = self._fs()
        info = fs.info(self.path)
        if info.get("type") != "directory":
            return InputIdentity(self.url, int(info.get("size") or 0), _version(info))
        files = fs.find(self.path, detail=True)
        own = self.path.rstrip("/")
        members = [(name[len(own) :].lstrip("/"), int(i.get("size") or 0), _version(i)) for name, i in files.items()]
        return _tree_identity(self.url, members)

    def check_writable(self) -> None:
        """Raise ``OutputError`` (one line) unless segpipe can write here: local, the nearest existing parent
        is a writable directory; object stores, the bucket is reachable and a probe object can be written and
        deleted under this prefix."""
        if self.is_local:
            existing = self.url
            while not os.path.exists(existing):
                existing = os.path.dirname(existing)
            if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
                raise OutputError(f"{self.url}: output location is not a writable directory")
            return
        try:
            self._check_bucket()
            probe = self.child(f".segpipe-probe-{uuid.uuid4().hex}")
            probe.write_bytes(b"")
            probe.remove()
        except OutputError:
            raise
        except Exception as exc:  # credentials, permissions, network: all mean "cannot write here"
            raise OutputError(f"{self.url}: output location is not writable ({_one_line(exc)})") from None

    def _check_bucket(self) -> None:
        if self.protocol not in OBJECT_STORES:
            return
        bucket = self.path.split("/", 1)[0]
        if not bucket:
            raise OutputError(f"{self.url}: an object store output needs a bucket (e.g. s3://bucket/prefix)")
        if not self._fs().exists(bucket):
            raise OutputError(f"{self.url}: bucket {bucket!r} does not exist or cannot be reached")

    def remove_partial_writes(self) -> int:
        """Delete the temporary files killed writes leave below this local directory (zarr LocalStore's
        ``<stem>.<32 hex>.partial``, ``staged_write``'s ``.<name>.<32 hex>.tmp``); return how many. Object
        stores write whole objects: always 0."""
        if not self.is_local:
            return 0
        removed = 0
        for folder, _, names in os.walk(self.url):
            for name in names:
                if PARTIAL_WRITE.search(name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(folder, name))
                        removed += 1
        return removed


def location(url_or_path: str | os.PathLike[str] | Location) -> Location:
    """The Location of a path or URL: relative paths become absolute, ``file://`` URLs plain paths.

    Raises:
        ConfigError: an unknown protocol, or credentials inside the URL.
    """
    if isinstance(url_or_path, Location):
        return url_or_path
    return Location(os.fspath(url_or_path))


def _local_identity(path: str) -> InputIdentity:
    stat = os.stat(path)
    if not os.path.isdir(path):
        return InputIdentity(path, stat.st_size, f"mtime_ns:{stat.st_mtime_ns}")
    members = []
    for folder, _, names in os.walk(path):
        for name in names:
            member = os.stat(os.path.join(folder, name))
            relative = os.path.relpath(os.path.join(folder, name), path)
            members.append((relative, member.st_size, f"mtime_ns:{member.st_mtime_ns}"))
    return _tree_identity(path, members)


def _tree_identity(url: str, members: list[tuple[str, int, str]]) -> InputIdentity:
    """A directory's identity: total size, and a hash over each file's relative path, size and version."""
    digest = hashlib.sha256()
    for relative, size, version in sorted(members):
        digest.update(f"{relative}\0{size}\0{version}\n".encode())
    return InputIdentity(url, sum(m[1] for m in members), f"tree:{digest.hexdigest()[:32]}")


VERSION_KEYS = (("ETag", "etag"), ("crc32c", "crc32c"), ("md5Hash", "md5"), ("etag", "etag"))
TIME_KEYS = ("mtime", "LastModified", "modified", "updated", "created")


def _version(info: dict[str, Any]) -> str:
    """The checksum or etag a store reports for one object, else its modification time in ns."""
    for key, label in VERSION_KEYS:
        if info.get(key):
            return f"{label}:{str(info[key]).strip(chr(34))}"
    for key in TIME_KEYS:
        stamp = info.get(key)
        if isinstance(stamp, datetime):
            return f"mtime_ns:{int(stamp.timestamp() * 1e9)}"
        if isinstance(stamp, (int, float)):
            return f"mtime_ns:{int(stamp * 1e9)}"
    return "unknown"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
