"""Plain weights (``torch.save(model.state_dict())``) for an architecture the model card names.

Read with ``torch.load(weights_only=True)``, which refuses pickled code. Adding an architecture is one entry in
``ARCHITECTURES``: a callable taking ``in_channels``, ``num_classes`` and the card's other architecture options.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from typing import Any

import torch

from segpipe.errors import ModelError, one_line
from segpipe.models.backends.base import Backend, Source, zip_names
from segpipe.models.card import ModelCard
from segpipe.models.unet import UNet

ARCHITECTURES: dict[str, Callable[..., torch.nn.Module]] = {"unet": UNet}


def detect(source: Source) -> bool:
    """Any ``torch.save`` zip archive (TorchScript and trusted pickles are tried first)."""
    return zip_names(source.payload) is not None


def read_weights(payload: bytes) -> Any:
    """The tensors in a ``torch.save`` archive, refusing anything that would run pickled code."""
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelError(
            "refused to load: the file holds pickled Python objects, not plain weights; "
            "pass --trust-model-pickle only if you made this file yourself"
        ) from None
    except Exception as exc:
        raise ModelError(f"cannot read weights ({one_line(exc)})") from None


def build(card: ModelCard, state: Any) -> torch.nn.Module:
    """The card's architecture with ``state`` loaded into it."""
    if not isinstance(state, dict):
        raise ModelError(f"expected a state_dict, found {type(state).__name__}")
    name = card.architecture.get("name")
    factory = ARCHITECTURES.get(str(name))
    if factory is None:
        known = ", ".join(f"{{'name': {k!r}, ...}}" for k in ARCHITECTURES)
        raise ModelError(f"model card architecture must be one of {known}; got {name!r}")
    options = {k: v for k, v in card.architecture.items() if k != "name"}
    try:
        model = factory(in_channels=card.in_channels or 1, num_classes=card.output_channels, **options)
        model.load_state_dict(state)
    except (TypeError, RuntimeError) as exc:
        raise ModelError(f"weights do not match the card's {name} architecture ({one_line(exc)})") from None
    return model


def load(payload: bytes, card: ModelCard, device: torch.device) -> torch.nn.Module:
    """Build the card's architecture and load the weights into it."""
    return build(card, read_weights(payload))


BACKEND = Backend(
    "state_dict", "plain weights (torch.save(state_dict)) with a card naming the architecture", detect, load, None, True
)
