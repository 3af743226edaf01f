"""Model sources by scheme: where a model's bytes come from, as ``segpipe.models.backends`` says what reads them.

Each source module registers itself (``register_source``) when imported here: ``files`` (a path or a URL),
``named`` (``builtin``, ``baseline``), ``mlflow_models`` (``models:/``). ``source_for(uri)`` finds the one for a URI.
"""

from segpipe.models.sources import files, mlflow_models, named
from segpipe.models.sources.base import Found, ModelSource, Request
from segpipe.models.sources.schemes import (
    register_source,
    registered_sources,
    scheme_of,
    source_for,
    unregister_source,
)

BUILTIN_SOURCES = (files.SOURCE, named.SOURCE, mlflow_models.SOURCE)

__all__ = [
    "BUILTIN_SOURCES",
    "Found",
    "ModelSource",
    "Request",
    "register_source",
    "registered_sources",
    "scheme_of",
    "source_for",
    "unregister_source",
]
