"""What every backend provides, and small helpers they share.

A backend turns bytes into a model: ``detect(source) -> bool`` says whether it reads this model, ``load(payload,
card, device)`` builds it (a ``torch.nn.Module`` or an object with ``predict``). Backends raise ``ModelError``
with a message that does not name the file; ``resolve_model`` and ``load_predictor`` prefix the model's URI.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import torch

from segpipe.models.card import ModelCard
from segpipe.models.predictor import LoadedModel


@dataclass(frozen=True)
class Source:
    """A model before a backend is chosen: what the user passed and, for files, its bytes."""

    uri: str
    payload: bytes | None = None  # None while only the spec is known (named models: builtin, baseline)


@dataclass(frozen=True)
class Named:
    """A model named by its spec alone (``builtin``, ``baseline:otsu``): its bytes, card and caveats."""

    payload: bytes
    card: ModelCard
    path: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Backend:
    """One model format.

    Attributes:
        name: the format, as recorded in ``ModelRef.format``.
        summary: one line for help texts.
        detect: whether this backend reads the model (named backends look at ``uri``, file backends at bytes).
        load: ``(payload, card, device) -> model``; builds the model from bytes alone.
        named: for named backends, ``spec -> Named``; ``None`` for file formats.
        needs_card: a file of this format cannot be used without a model card.
        trusted_only: considered only when the user trusts the file (``--trust-model-pickle``).
        extra: the ``pip install segpipe[extra]`` that provides its runtime, if optional.
    """

    name: str
    summary: str
    detect: Callable[[Source], bool]
    load: Callable[[bytes, ModelCard, torch.device], LoadedModel]
    named: Callable[[str], Named] | None = None
    needs_card: bool = False
    trusted_only: bool = False
    extra: str | None = None


def zip_names(payload: bytes | None) -> list[str] | None:
    """Member names when ``payload`` is a zip archive (TorchScript, ``torch.save``), else None."""
    if not payload:
        return None
    buffer = io.BytesIO(payload)
    if not zipfile.is_zipfile(buffer):
        return None
    try:
        with zipfile.ZipFile(buffer) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, ValueError):
        return None
