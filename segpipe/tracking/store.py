"""Where tracking data lives.

segpipe's home folder, the default MLflow store, SQLite stores made whole, and tracking URIs checked and shown without
credentials.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from pathlib import Path

from segpipe.errors import ConfigError

DEFAULT_EXPERIMENT = "segpipe"
_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "databricks")


def segpipe_home() -> Path:
    """Where segpipe keeps its per-user state.

    ``$SEGPIPE_HOME``, else ``$XDG_DATA_HOME/segpipe``, else ``~/.local/share/segpipe``.
    """
    if os.environ.get("SEGPIPE_HOME"):
        return Path(os.environ["SEGPIPE_HOME"]).expanduser().resolve()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data).expanduser().resolve() / "segpipe"


def default_tracking_uri() -> str:
    """The one store every command uses unless told otherwise.

    ``MLFLOW_TRACKING_URI`` if set, else the per-user sqlite store ``segpipe_home()/mlflow.db``.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{segpipe_home() / 'mlflow.db'}"


def default_artifact_root(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts.

    Beside a sqlite store (``<its folder>/mlartifacts``), never the current directory; for a server or any other store,
    the store's own choice (None).
    """
    database = sqlite_path(tracking_uri)
    return None if database is None else str(database.parent / "mlartifacts")


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///").split("?")[0]).absolute()


def create_sqlite_store(tracking_uri: str) -> None:
    """Make a new SQLite store whole or not at all.

    MLflow creates its schema one migration at a time, so a run killed during the first use of a store left a file on
    which every later run failed ("table ... already exists"). The store is built under a temporary name beside it, then
    linked into place, which also never overwrites a store another process created meanwhile. No-op for other URIs and
    existing stores.
    """
    path = sqlite_path(tracking_uri)
    if path is None or path.exists():
        return
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        store = SqlAlchemyStore(f"sqlite:///{partial}", default_artifact_root(tracking_uri))  # type: ignore[no-untyped-call]
        store.engine.dispose()
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def check_tracking_uri(uri: str) -> None:
    """Refuse a malformed URI before any work starts."""
    match = re.match(r"^([a-z][a-z0-9+.-]*):", uri)
    scheme = match.group(1).split("+")[0] if match else ""
    if scheme not in _SCHEMES:
        raise ConfigError(f"--tracking-uri {uri!r}: expected one of {', '.join(s + ':' for s in _SCHEMES)}")
