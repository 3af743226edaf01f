"""A fully pickled ``torch.nn.Module`` (``torch.save(model)``): unpickling runs code, so only when trusted."""

from __future__ import annotations

import io
import pickle

import torch

from segpipe.errors import ModelError, one_line
from segpipe.models.backends.base import Backend, Source, zip_names
from segpipe.models.card import ModelCard


def detect(source: Source) -> bool:
    """A ``torch.save`` archive that is not plain weights (only asked when the user trusts the file)."""
    if zip_names(source.payload) is None:
        return False
    assert source.payload is not None
    try:
        torch.load(io.BytesIO(source.payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return True
    except Exception:
        return False
    return False


def load(payload: bytes, card: ModelCard, device: torch.device) -> torch.nn.Module:
    """Unpickle the module (runs the file's code: the user vouched for it)."""
    try:
        module = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelError(f"cannot unpickle model ({one_line(exc)})") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"pickled object is a {type(module).__name__}, not a torch.nn.Module")
    return module


BACKEND = Backend(
    "pickle", "a fully pickled torch.nn.Module (only with --trust-model-pickle)", detect, load, trusted_only=True
)
