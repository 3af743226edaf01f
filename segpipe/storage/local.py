"""``LocalLocation``: a path on this machine's filesystem, through ``os`` directly (and zarr's ``LocalStore``)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from typing import IO, ClassVar

from zarr.abc.store import Store
from zarr.storage import LocalStore

from segpipe.errors import OutputError
from segpipe.storage.base import InputIdentity, Location, tree_identity

# Temporary files a kill -9 can leave: zarr LocalStore's (``<stem>.<32 hex>.partial``, from ``_atomic_write`` in
# zarr/storage/_local.py) and this module's own (``.<name>.<32 hex>.tmp``).
PARTIAL_WRITE = re.compile(r"(\.[0-9a-f]{32}\.partial|^\..+\.[0-9a-f]{32}\.tmp)$")
NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV)


class LocalLocation(Location):
    """A local file or directory; its URL is an absolute path without a scheme."""

    protocols: ClassVar[tuple[str, ...]] = ("file",)
    supports_conditional_create: ClassVar[bool] = True  # O_EXCL / link(2) fail when the name exists
    supports_rename: ClassVar[bool] = True

    @property
    def path(self) -> str:
        """The absolute path."""
        return self.url

    def exists(self) -> bool:
        """Whether a file or directory exists here."""
        return os.path.exists(self.url)

    def is_dir(self) -> bool:
        """Whether this is a directory."""
        return os.path.isdir(self.url)

    def size(self) -> int:
        """Size in bytes of the file here (FileNotFoundError when there is none)."""
        return os.path.getsize(self.url)

    def read_bytes(self) -> bytes:
        """All bytes of the file here (FileNotFoundError when there is none)."""
        with open(self.url, "rb") as handle:
            return handle.read()

    def write_bytes(self, data: bytes) -> None:
        """Write ``data`` atomically: a temporary file in the same directory, then ``os.replace``."""
        if not data:  # an empty file (a marker) is created in one step: nothing to stage
            os.makedirs(os.path.dirname(self.url), exist_ok=True)
            open(self.url, "wb").close()
            return
        with self.staged_write() as temporary, open(temporary, "wb") as handle:
            handle.write(data)

    def create_if_absent(self, data: bytes) -> bool:
        """Write ``data`` to a temporary file beside this one, then hard-link it into place.

        ``link(2)`` fails if the name exists, so one caller wins, and the file appears whole. Filesystems without hard
        links fall back to ``O_CREAT | O_EXCL`` (still one winner; a reader may see the file while it is written).
        """
        temporary = self._temporary()
        try:
            with open(temporary, "xb") as handle:
                handle.write(data)
            os.link(temporary, self.url)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:
                raise
            return self._create_exclusive(data)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        return True

    def _create_exclusive(self, data: bytes) -> bool:
        try:
            descriptor = os.open(self.url, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        return True

    def _temporary(self) -> str:
        """A fresh temporary name beside this file (its folder created); ``remove_partial_writes`` knows it."""
        folder = os.path.dirname(self.url)
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, f".{self.name}.{uuid.uuid4().hex}.tmp")

    @contextlib.contextmanager
    def staged_write(self) -> Iterator[str]:
        """Yield a temporary path in the same directory; on success ``os.replace`` moves it here."""
        temporary = self._temporary()
        try:
            yield temporary
            os.replace(temporary, self.url)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)

    def remove(self) -> None:
        """Delete this file or directory tree; nothing there is fine (other failures propagate)."""
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(self.url) and not os.path.islink(self.url):
                shutil.rmtree(self.url)
            else:
                os.unlink(self.url)

    def listdir(self) -> list[str]:
        """Sorted names directly below this directory ([] when it is missing or a file)."""
        try:
            return sorted(os.listdir(self.url))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def open(self, mode: str = "rb") -> IO[bytes]:
        """A binary file handle; ``wb`` creates the parent folders."""
        self._check_mode(mode)
        if mode == "wb":
            os.makedirs(os.path.dirname(self.url), exist_ok=True)
        return open(self.url, mode)  # noqa: SIM115 (the caller closes it)

    def zarr_store(self, read_only: bool = False) -> Store:
        """A zarr ``LocalStore`` rooted here."""
        return LocalStore(self.url, read_only=read_only)

    def identity(self) -> InputIdentity:
        """Size and ``mtime_ns`` of the file, or a hash over the tree's files for a directory."""
        stat = os.stat(self.url)
        if not os.path.isdir(self.url):
            return InputIdentity(self.url, stat.st_size, f"mtime_ns:{stat.st_mtime_ns}")
        members = []
        for folder, _, names in os.walk(self.url):
            for name in names:
                member = os.stat(os.path.join(folder, name))
                relative = os.path.relpath(os.path.join(folder, name), self.url)
                members.append((relative, member.st_size, f"mtime_ns:{member.st_mtime_ns}"))
        return tree_identity(self.url, members)

    def check_writable(self) -> None:
        """Raise ``OutputError`` unless the nearest existing parent is a writable directory."""
        existing = self.url
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
            raise OutputError(f"{self.url}: output location is not a writable directory")

    def remove_partial_writes(self) -> int:
        """Delete the temporary files of killed writes below this directory; return how many.

        These are zarr LocalStore's ``<stem>.<32 hex>.partial`` and this module's ``.<name>.<32 hex>.tmp`` files.
        """
        removed = 0
        for folder, _, names in os.walk(self.url):
            for name in names:
                if PARTIAL_WRITE.search(name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(folder, name))
                        removed += 1
        return removed
