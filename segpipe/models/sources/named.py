"""Models named by their spec alone (``builtin``, ``baseline:otsu``): the named backends' own bytes and cards."""

from __future__ import annotations

from segpipe.errors import ModelError
from segpipe.models.backends import find_named, get_backend
from segpipe.models.ref import ModelRef
from segpipe.models.sources.base import Found, ModelSource, Request
from segpipe.models.sources.schemes import NAME, register_source


def find_named_model(uri: str, request: Request) -> Found:
    """The named backend's bytes and card (an inline card replaces its card)."""
    backend = find_named(uri)
    if backend is None or backend.named is None:
        raise ModelError(f"{uri}: no named model is called that")
    named = backend.named(uri)
    return Found(uri, backend, named.payload, request.card or named.card, named.path, named.notes)


def read_named(ref: ModelRef) -> bytes:
    """The named backend's bytes again."""
    backend = get_backend(ref.format)
    if backend.named is None:
        raise ModelError(f"{ref.uri}: the {backend.name} format is not a named model")
    return backend.named(ref.uri).payload


SOURCE = ModelSource("named", (NAME,), find_named_model, read_named)
register_source(SOURCE)
