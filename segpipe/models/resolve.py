"""``resolve_model``: from what the user passed to a validated ``ModelRef``.

What the user passed is a path, a URL, ``builtin``, ``baseline`` or ``models:/...``; the model is loaded once on the CPU
and probed, so a broken model fails here in one line.

The source registered for the spec's scheme (``segpipe.models.sources``) finds the bytes, backend and card; this
module loads and probes them. Without a card segpipe probes the model with the image's band count (``channels``)
and says what it assumed in ``ModelRef.assumptions``.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from segpipe.errors import ModelError, one_line
from segpipe.models.cache import build_model, remember
from segpipe.models.card import FALLBACK_HALO, ModelCard
from segpipe.models.predictor import LoadedModel, Predictor
from segpipe.models.ref import ModelRef, sha256_of
from segpipe.models.sources import Found, Request, source_for

PROBE_EDGE = 64
CPU = torch.device("cpu")


def resolve_model(
    spec: str | os.PathLike[str],
    trust_pickle: bool = False,
    channels: int | None = None,
    *,
    card: ModelCard | Mapping[str, Any] | None = None,
    tracking_uri: str | None = None,
    trust_code: bool = False,
) -> ModelRef:
    """Find, load (on the CPU) and probe a model; return a reference any worker can load it from.

    Args:
        spec: ``builtin``, ``baseline[:otsu|:<t>]``, a local path, a URL (``s3://...``) or ``models:/NAME@ALIAS``
            / ``models:/NAME/VERSION``.
        trust_pickle: allow a fully pickled ``nn.Module`` (which executes code on load).
        channels: the first image's band count, used to probe a model that has no card.
        card: an inline card, used instead of any card beside the file (a registry version keeps its own).
        tracking_uri: MLflow tracking URI for ``models:/`` specs (default: ``MLFLOW_TRACKING_URI``).
        trust_code: allow a bioimage.io package's architecture code (needed for its pytorch_state_dict weights).

    Raises:
        ModelError: one line naming the model and what is wrong (shapes, for a model that fails its probe).
    """
    uri = os.fspath(spec)
    inline = card if isinstance(card, ModelCard) or card is None else ModelCard.from_dict(card, f"{uri}: inline card")
    found = source_for(uri).find(uri, Request(trust_pickle, inline, tracking_uri, trust_code))
    return _load_and_probe(found, channels)


def _load_and_probe(found: Found, channels: int | None) -> ModelRef:
    """Load the model on the CPU, probe it, keep it in this process's cache, and describe it."""
    base = found.card or ModelCard(name=_stem(found.path), in_channels=None, num_classes=0, class_names=())
    ref = ModelRef(found.backend.name, found.path, sha256_of(found.payload), base, uri=found.label)
    model = build_model(ref, found.payload, CPU)
    predictor = Predictor(model, base, CPU)
    bands, how = _probe_bands(base, channels, model)
    classes = probe(predictor, found.label, bands)
    guessed = found.card is None and how == "guessed"
    in_channels = base.in_channels if found.card is not None or guessed else bands
    names = base.class_names or tuple(f"class_{k}" for k in range(classes))
    card = replace(base, in_channels=in_channels, num_classes=classes, class_names=names)
    predictor.card = card
    assumptions = found.notes + _assumptions(found.card, card, how)
    ref = replace(ref, uri=found.uri, card=card, assumptions=assumptions, registry=found.registry)
    remember(ref, found.payload, predictor)
    return ref


def _probe_bands(card: ModelCard, channels: int | None, model: LoadedModel) -> tuple[int, str]:
    """Bands to probe with, and where that number came from."""
    if card.in_channels is not None:
        return card.in_channels, "from its card"
    if channels is not None:
        return channels, "from the image"
    declared = getattr(model, "input_channels", None)
    if isinstance(declared, int):
        return declared, "declared by the model"
    return 1, "guessed"


def probe(predictor: Predictor, uri: str, bands: int) -> int:
    """Run one (1, bands, e, e) forward pass; return the class count, or fail naming the shapes."""
    divisor = predictor.card.size_divisor
    edge = -(-PROBE_EDGE // divisor) * divisor
    shape = (1, bands, edge, edge)
    expected_classes = predictor.card.num_classes
    expected = f"(1, {expected_classes or 'classes >= 2'}, {edge}, {edge})"
    try:
        output = predictor.predict(np.zeros(shape, np.float32))
    except Exception as exc:  # any failure of user code: report it in one line
        raise ModelError(
            f"{uri}: model failed on probe input {shape} (expected output {expected}): {one_line(exc)}"
        ) from None
    got = tuple(output.shape)
    wrong = len(got) != 4 or got[0] != 1 or got[2:] != (edge, edge) or got[1] < 2
    if wrong or (expected_classes and got[1] != expected_classes):
        why = f" (its card says {expected_classes} classes)" if expected_classes and not wrong else ""
        raise ModelError(f"{uri}: probe input {shape} gave output {got}; expected {expected}{why}")
    return int(got[1])


def _assumptions(given: ModelCard | None, card: ModelCard, how: str) -> tuple[str, ...]:
    """What segpipe assumed for lack of a card, as sentences a user can check."""
    halo = (
        f"receptive field {card.receptive_field}"
        if card.receptive_field is not None
        else f"receptive field unknown (halo {card.default_halo})"
    )
    if given is None:
        bands = (
            f"{card.in_channels} input band{'s' if card.in_channels != 1 else ''} ({how})"
            if card.in_channels is not None
            else "1 input band (a guess: pass the image's band count)"
        )
        classes = f"{card.num_classes} classes (from a probe)"
        return (f"no model card: assumed {bands}, {classes}, normalization {card.normalization}, {halo}",)
    notes = []
    if given.num_classes == 0:
        notes.append(f"model card gives no class count: {card.num_classes} classes (from a probe)")
    if given.halo is None and given.receptive_field is None:
        notes.append(f"model card gives neither halo nor receptive field: halo {FALLBACK_HALO}")
    return tuple(notes)


def _stem(uri: str) -> str:
    return posixpath.splitext(posixpath.basename(uri.rstrip("/")))[0] or uri
