"""The U-Nets whose weights ship with segpipe (``segpipe/models/weights``).

``builtin``: background / nucleus, trained by scripts/train_builtin.py. ``builtin:boundary``: background /
nucleus / boundary, trained by scripts/train_boundary.py; its card's ``instances`` rule makes the objects stage
grow each nucleus interior into its boundary, so touching nuclei come out as separate objects.
"""

from __future__ import annotations

from pathlib import Path

import torch

from segpipe.models.backends import state_dict
from segpipe.models.backends.base import Backend, Named, Source
from segpipe.models.card import ModelCard

BUILTIN_NAME = "builtin"
BOUNDARY_NAME = "builtin:boundary"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
BUILTIN_WEIGHTS = WEIGHTS_DIR / "unet_nuclei.pt"
BUILTIN_CARD = WEIGHTS_DIR / "unet_nuclei.json"
BOUNDARY_WEIGHTS = WEIGHTS_DIR / "unet_nuclei_boundary.pt"
BOUNDARY_CARD = WEIGHTS_DIR / "unet_nuclei_boundary.json"
MODELS = {BUILTIN_NAME: (BUILTIN_WEIGHTS, BUILTIN_CARD), BOUNDARY_NAME: (BOUNDARY_WEIGHTS, BOUNDARY_CARD)}


def detect(source: Source) -> bool:
    """The specs ``builtin`` and ``builtin:boundary``."""
    return source.payload is None and source.uri in MODELS


def named(spec: str) -> Named:
    """The packaged weights and their card."""
    weights, card = MODELS[spec]
    return Named(weights.read_bytes(), ModelCard.from_json(card), str(weights))


def load(payload: bytes, card: ModelCard, device: torch.device) -> torch.nn.Module:
    """The card's U-Net with the packaged weights."""
    return state_dict.build(card, state_dict.read_weights(payload))


BACKEND = Backend(
    BUILTIN_NAME, "the nuclei U-Nets shipped with segpipe (builtin, builtin:boundary)", detect, load, named
)
