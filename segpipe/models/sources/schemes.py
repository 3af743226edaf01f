"""The registry of model sources, keyed by scheme (as zarr's ``register_codec`` keys codecs by id).

The scheme of ``models:/NAME@ALIAS`` is ``models``, of ``s3://bucket/key`` ``s3``; a spec that a named backend
reads (``builtin``, ``baseline:otsu``) has the scheme ``name``, a plain path the scheme ``""``. A ``scheme://``
URL whose scheme has no source of its own goes to the ``url`` source; any other spec is a path.
"""

from __future__ import annotations

import re

from segpipe.errors import ModelError
from segpipe.models.backends import find_named
from segpipe.models.sources.base import ModelSource

PATH, NAME, URL = "", "name", "url"
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]+):/")  # two letters at least: not a drive letter
_SOURCES: dict[str, ModelSource] = {}


def register_source(source: ModelSource) -> None:
    """Serve ``source.schemes`` with ``source`` (replacing any source registered for them)."""
    for scheme in source.schemes:
        _SOURCES[scheme] = source


def unregister_source(name: str) -> None:
    """Remove the source called ``name`` from every scheme it serves (nothing happens if there is none)."""
    for scheme in [s for s, source in _SOURCES.items() if source.name == name]:
        del _SOURCES[scheme]


def registered_sources() -> dict[str, ModelSource]:
    """Scheme -> source, for every registered scheme."""
    return dict(_SOURCES)


def scheme_of(uri: str) -> str:
    """``models`` for ``models:/...``, ``s3`` for ``s3://...``, ``name`` for ``builtin``, ``""`` for a path."""
    match = _SCHEME.match(uri)
    if match is not None:
        return match["scheme"]
    return NAME if find_named(uri) is not None else PATH


def source_for(uri: str) -> ModelSource:
    """The source registered for ``uri``'s scheme, else the URL source for a URL, else the path source."""
    scheme = scheme_of(uri)
    source = _SOURCES.get(scheme) or _SOURCES.get(URL if "://" in uri else PATH)
    if source is None:
        raise ModelError(f"{uri}: no model source for the scheme {scheme!r} (known: {', '.join(sorted(_SOURCES))})")
    return source
