"""The U-Net whose weights ship with segpipe (``segpipe/models/weights``, trained by scripts/train_builtin.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from segpipe.models.backends import state_dict
from segpipe.models.backends.base import Backend, Named, Source
from segpipe.models.card import ModelCard

BUILTIN_NAME = "builtin"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
BUILTIN_WEIGHTS = WEIGHTS_DIR / "unet_nuclei.pt"
BUILTIN_CARD = WEIGHTS_DIR / "unet_nuclei.json"


def detect(source: Source) -> bool:
    """The spec ``builtin``."""
    return source.payload is None and source.uri == BUILTIN_NAME


def named(spec: str) -> Named:
    """The packaged weights and their card."""
    return Named(BUILTIN_WEIGHTS.read_bytes(), ModelCard.from_json(BUILTIN_CARD), str(BUILTIN_WEIGHTS))


def load(payload: bytes, card: ModelCard, device: torch.device) -> torch.nn.Module:
    """The card's U-Net with the packaged weights."""
    return state_dict.build(card, state_dict.read_weights(payload))


BACKEND = Backend(BUILTIN_NAME, "the nuclei U-Net shipped with segpipe", detect, load, named)
