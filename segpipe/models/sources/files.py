"""Model files: a local path, or a URL read through ``segpipe.storage``; a card is looked for beside the file.

The backend is chosen by the file's bytes (``segpipe.models.backends``); the card is the inline one, else the
first of ``<stem>.json``, ``.yaml``, ``.yml`` beside the file. A bioimage.io package (its ``rdf.yaml``, packed
with its folder, or its ``.zip``) carries its own card (``segpipe.models.package``).
"""

from __future__ import annotations

from segpipe.errors import ModelError
from segpipe.models.backends import find_for_bytes
from segpipe.models.card import ModelCard, card_locations
from segpipe.models.package import is_rdf_path, pack_folder, read_package
from segpipe.models.ref import ModelRef
from segpipe.models.sources.base import Found, ModelSource, Request
from segpipe.models.sources.schemes import PATH, URL, register_source


def is_local(uri: str) -> bool:
    """A plain filesystem path (no ``scheme://``)."""
    return "://" not in uri


def read_bytes(uri: str) -> bytes:
    """All bytes at ``uri``; raises ``FileNotFoundError`` when nothing is there, ``OSError`` when unreadable."""
    if is_local(uri):
        if is_rdf_path(uri):
            return pack_folder(uri)
        with open(uri, "rb") as handle:
            return handle.read()
    from segpipe.storage import location  # the storage layer (and fsspec) loads only for a URL

    return location(uri).read_bytes()


def read_optional(uri: str) -> bytes | None:
    """The bytes at ``uri``, or None when nothing is there."""
    try:
        return read_bytes(uri)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def find_file(uri: str, request: Request) -> Found:
    """The file's bytes, the backend that reads them and its card; one line naming ``uri`` when any is missing."""
    payload = _read_model(uri)
    backend = find_for_bytes(uri, payload, request.trust_pickle)
    if backend is None:
        raise ModelError(
            f"{uri}: not a TorchScript, torch.save or ONNX file (segpipe never unpickles plain pickle files)"
        )
    if backend.name == "bioimageio":
        return Found(uri, backend, payload, read_package(payload, uri, request.trust_code).card, uri)
    card = request.card or card_beside(uri)
    if card is None and backend.needs_card:
        raise ModelError(
            f"{uri}: not TorchScript; as a {backend.name} it needs a model card at {card_locations(uri)[0]} (or "
            ".yaml) naming its architecture (a fully pickled model loads only with --trust-model-pickle)"
        )
    return Found(uri, backend, payload, card, uri)


def read_file(ref: ModelRef) -> bytes:
    """The bytes at ``ref.uri`` again."""
    try:
        return read_bytes(ref.uri)
    except OSError as exc:
        raise ModelError(f"{ref.uri}: cannot read the model ({exc.strerror or exc})") from None


def card_beside(uri: str) -> ModelCard | None:
    """The first card found beside the weights (``.json``, ``.yaml``, ``.yml``), or None."""
    for location in card_locations(uri):
        if location == uri:
            continue
        text = read_optional(location)
        if text is not None:
            return ModelCard.from_text(text, location)
    return None


def _read_model(uri: str) -> bytes:
    try:
        return read_bytes(uri)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ModelError(f"{uri}: no such model file") from None
    except OSError as exc:
        raise ModelError(f"{uri}: cannot read the model ({exc.strerror or exc})") from None


SOURCE = ModelSource("file", (PATH, URL), find_file, read_file)
register_source(SOURCE)
