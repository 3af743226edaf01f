"""``FsspecLocation`` for any URL an fsspec filesystem serves; ``S3Location`` for S3.

fsspec serves ``memory://``, ``gs://``, ...; ``S3Location`` adds conditional creates (a PUT with ``If-None-Match: *``).

Filesystems come from ``segpipe.storage.options`` in the process that uses them; a Location holds its URL only.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import IO, Any, ClassVar

import fsspec
from zarr.abc.store import Store
from zarr.storage import FsspecStore

from segpipe.errors import OutputError, one_line
from segpipe.storage.base import InputIdentity, Location, tree_identity
from segpipe.storage.options import OBJECT_STORES, S3_PROTOCOLS, async_filesystem, filesystem

READ_BLOCK = 2**20  # bytes fetched per range request when reading a remote file (TIFF headers, tiles)
VERSION_KEYS = (("ETag", "etag"), ("crc32c", "crc32c"), ("md5Hash", "md5"), ("etag", "etag"))
TIME_KEYS = ("mtime", "LastModified", "modified", "updated", "created")


class FsspecLocation(Location):
    """A file or prefix on an fsspec filesystem: every protocol but local paths and those with their own class."""

    @classmethod
    def serves(cls, protocol: str) -> bool:
        """Any protocol but ``file`` (local paths have ``LocalLocation``)."""
        return protocol != "file"

    @property
    def path(self) -> str:
        """The path the filesystem knows (``bucket/key`` on object stores, ``/key`` on memory)."""
        return str(fsspec.get_filesystem_class(self.protocol)._strip_protocol(self.url))

    def _fs(self) -> fsspec.AbstractFileSystem:
        fs = filesystem(self.protocol)
        fs.invalidate_cache(self.path)  # another process may have written since this one last listed
        return fs

    def exists(self) -> bool:
        """Whether a file, directory or any object under this prefix exists."""
        return bool(self._fs().exists(self.path))

    def is_dir(self) -> bool:
        """Whether this is a directory (object stores: a prefix with objects below it)."""
        return bool(self._fs().isdir(self.path))

    def size(self) -> int:
        """Size in bytes of the object here (FileNotFoundError when there is none)."""
        return int(self._fs().size(self.path))

    def read_bytes(self) -> bytes:
        """All bytes of the object here (FileNotFoundError when there is none)."""
        return bytes(self._fs().cat_file(self.path))

    def write_bytes(self, data: bytes) -> None:
        """Write ``data`` in one PUT (atomic on object stores)."""
        filesystem(self.protocol).pipe_file(self.path, bytes(data))

    @contextlib.contextmanager
    def staged_write(self) -> Iterator[str]:
        """Yield a path in a fresh local temporary folder; on success it is uploaded here in one go."""
        folder = tempfile.mkdtemp(prefix="segpipe-")
        temporary = os.path.join(folder, self.name or "upload")
        try:
            yield temporary
            filesystem(self.protocol).put_file(temporary, self.path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def remove(self) -> None:
        """Delete this object or prefix; nothing there is fine. A whole bucket is never removed."""
        if self.protocol in OBJECT_STORES and "/" not in self.path.strip("/"):
            raise ValueError(f"{self.url}: refusing to remove a whole bucket")
        with contextlib.suppress(FileNotFoundError):
            self._fs().rm(self.path, recursive=True)

    def listdir(self) -> list[str]:
        """Sorted names directly below this prefix, from one listing ([] when nothing is there)."""
        try:
            entries = self._fs().ls(self.path, detail=False)
        except FileNotFoundError:
            return []
        own = self.path.rstrip("/")
        return sorted({posixpath.basename(str(e).rstrip("/")) for e in entries if str(e).rstrip("/") != own})

    def open(self, mode: str = "rb") -> IO[bytes]:
        """A binary file handle; reads are range requests of ``READ_BLOCK`` bytes, read ahead."""
        self._check_mode(mode)
        if mode == "wb":
            return filesystem(self.protocol).open(self.path, mode)  # type: ignore[no-any-return]
        return self._fs().open(self.path, mode, block_size=READ_BLOCK, cache_type="readahead")  # type: ignore[no-any-return]

    def zarr_store(self, read_only: bool = False) -> Store:
        """A zarr ``FsspecStore`` over this protocol's asynchronous filesystem."""
        return FsspecStore(async_filesystem(self.protocol), read_only=read_only, path=self.path)

    def identity(self) -> InputIdentity:
        """Size and version (etag, checksum or mtime) of the object, or a hash over the prefix's objects."""
        fs = self._fs()
        info = fs.info(self.path)
        if info.get("type") != "directory":
            return InputIdentity(self.url, int(info.get("size") or 0), _version(info))
        files = fs.find(self.path, detail=True)
        own = self.path.rstrip("/")
        members = [(name[len(own) :].lstrip("/"), int(i.get("size") or 0), _version(i)) for name, i in files.items()]
        return tree_identity(self.url, members)

    def check_writable(self) -> None:
        """Raise ``OutputError`` unless the bucket is reachable and writable under this prefix.

        Writable: a probe object can be written and deleted under this prefix.
        """
        try:
            self._check_bucket()
            probe = self.child(f".segpipe-probe-{uuid.uuid4().hex}")
            probe.write_bytes(b"")
            probe.remove()
        except OutputError:
            raise
        except Exception as exc:  # credentials, permissions, network: all mean "cannot write here"
            raise OutputError(f"{self.url}: output location is not writable ({one_line(exc)})") from None

    def _check_bucket(self) -> None:
        if self.protocol not in OBJECT_STORES:
            return
        bucket = self.path.split("/", 1)[0]
        if not bucket:
            raise OutputError(f"{self.url}: an object store output needs a bucket (e.g. s3://bucket/prefix)")
        if not self._fs().exists(bucket):
            raise OutputError(f"{self.url}: bucket {bucket!r} does not exist or cannot be reached")


class S3Location(FsspecLocation):
    """An S3 object or prefix (AWS, MinIO, moto: anything that honours ``If-None-Match`` on PUT)."""

    protocols: ClassVar[tuple[str, ...]] = S3_PROTOCOLS
    supports_conditional_create: ClassVar[bool] = True

    @classmethod
    def serves(cls, protocol: str) -> bool:
        """``s3`` and ``s3a``."""
        return protocol in cls.protocols

    def create_if_absent(self, data: bytes) -> bool:
        """One PUT with ``If-None-Match: *`` (s3fs ``pipe_file(mode="create")``).

        S3 answers 412 PreconditionFailed when the key exists, which s3fs raises as ``FileExistsError``.
        """
        try:
            filesystem(self.protocol).pipe_file(self.path, bytes(data), mode="create")
        except FileExistsError:
            return False
        return True


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
