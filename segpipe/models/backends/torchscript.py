"""TorchScript files (``torch.jit.save``): code and weights in one zip archive, no Python pickle executed."""

from __future__ import annotations

import io

import torch

from segpipe.errors import ModelError, one_line
from segpipe.models.backends.base import Backend, Source, zip_names
from segpipe.models.card import ModelCard


def detect(source: Source) -> bool:
    """A zip archive holding TorchScript code (``code/`` or ``constants.pkl``)."""
    names = zip_names(source.payload)
    return names is not None and any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def load(payload: bytes, card: ModelCard, device: torch.device) -> torch.nn.Module:
    """``torch.jit.load`` from memory, onto the CPU (the predictor moves it to ``device``)."""
    try:
        module: torch.nn.Module = torch.jit.load(io.BytesIO(payload), map_location="cpu")  # type: ignore[no-untyped-call]
        return module
    except Exception as exc:  # torch raises RuntimeError, ValueError, ... for a bad archive
        raise ModelError(f"cannot load TorchScript model ({one_line(exc)})") from None


BACKEND = Backend("torchscript", "a TorchScript file (torch.jit.save)", detect, load)
