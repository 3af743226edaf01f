"""The backend registry: ``resolve_model`` walks it in order; the first backend whose ``detect`` says yes wins.

Named backends (``builtin``, ``baseline``) are matched on the spec; file backends on the bytes, most specific
first (a bioimage.io package zip, ONNX, TorchScript, a trusted pickle, then any ``torch.save`` archive as plain
weights).
"""

from __future__ import annotations

from segpipe.errors import ModelError
from segpipe.models.backends import baseline, bioimageio, builtin, onnx, pickle, state_dict, torchscript
from segpipe.models.backends.base import Backend, Named, Source

_REGISTRY: list[Backend] = [
    builtin.BACKEND,
    baseline.BACKEND,
    bioimageio.BACKEND,
    onnx.BACKEND,
    torchscript.BACKEND,
    pickle.BACKEND,
    state_dict.BACKEND,
]


def registered_backends() -> tuple[Backend, ...]:
    """The registered backends, in detection order."""
    return tuple(_REGISTRY)


def register_backend(backend: Backend, before: str | None = None) -> None:
    """Add ``backend`` (replacing one of the same name), ahead of the backend named ``before`` if given."""
    _REGISTRY[:] = [b for b in _REGISTRY if b.name != backend.name]
    names = [b.name for b in _REGISTRY]
    _REGISTRY.insert(names.index(before) if before in names else len(_REGISTRY), backend)


def unregister_backend(name: str) -> None:
    """Remove the backend called ``name`` (nothing happens if there is none)."""
    _REGISTRY[:] = [b for b in _REGISTRY if b.name != name]


def get_backend(name: str) -> Backend:
    """The backend for a ``ModelRef.format``."""
    for backend in _REGISTRY:
        if backend.name == name:
            return backend
    raise ModelError(f"unknown model format {name!r} (known: {', '.join(b.name for b in _REGISTRY)})")


def find_named(spec: str) -> Backend | None:
    """The named backend for a spec such as ``builtin`` or ``baseline:otsu``, if any."""
    source = Source(spec)
    return next((b for b in _REGISTRY if b.named is not None and b.detect(source)), None)


def find_for_bytes(uri: str, payload: bytes, trust_pickle: bool = False) -> Backend | None:
    """The first file backend that reads ``payload`` (trusted-only backends only when ``trust_pickle``)."""
    source = Source(uri, payload)
    for backend in _REGISTRY:
        if backend.named is None and (trust_pickle or not backend.trusted_only) and backend.detect(source):
            return backend
    return None


__all__ = [
    "Backend",
    "Named",
    "Source",
    "find_for_bytes",
    "find_named",
    "get_backend",
    "register_backend",
    "registered_backends",
    "unregister_backend",
]
