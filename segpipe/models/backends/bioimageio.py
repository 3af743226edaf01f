"""bioimage.io packages: the weights the card's ``architecture`` names, read from the package zip.

``segpipe.models.package`` validates the package and chooses the weights when the model is resolved; this backend
loads them on every worker: TorchScript and ONNX with their own backends, ``pytorch_state_dict`` by running the
package's architecture code (chosen only when the user passed ``--trust-model-code``) and loading plain tensors.
"""

from __future__ import annotations

import hashlib
import importlib
from typing import Any

import torch

from segpipe.errors import ModelError, one_line
from segpipe.models.backends import onnx, state_dict, torchscript
from segpipe.models.backends.base import Backend, Source
from segpipe.models.card import ModelCard
from segpipe.models.package import rdf_member, read_member
from segpipe.models.predictor import LoadedModel

NAME = "bioimageio"


def detect(source: Source) -> bool:
    """A zip archive with a bioimage.io description at its root."""
    return rdf_member(source.payload) is not None


def load(payload: bytes, card: ModelCard, device: torch.device) -> LoadedModel:
    """The weights ``card.architecture`` names, from the package zip ``payload``."""
    arch = card.architecture
    kind, member = str(arch.get("weights")), str(arch.get("source"))
    weights = read_member(payload, member)
    expected = str(arch.get("sha256") or "")
    if expected and hashlib.sha256(weights).hexdigest() != expected:
        raise ModelError(f"{member} does not match the sha256 its package declares")
    if kind == "torchscript":
        return torchscript.load(weights, card, device)
    if kind == "onnx":
        return onnx.load(weights, card, device)
    if kind == "pytorch_state_dict":
        return _state_dict_model(payload, arch, weights)
    raise ModelError(f"package weights {kind!r} are not run by segpipe")


def _state_dict_model(payload: bytes, arch: dict[str, Any], weights: bytes) -> torch.nn.Module:
    """The package's architecture (its own code: chosen only with --trust-model-code) with its weights loaded."""
    factory = _architecture(payload, arch)
    try:
        model = factory(**dict(arch.get("kwargs") or {}))
        model.load_state_dict(state_dict.read_weights(weights))
    except ModelError:
        raise
    except Exception as exc:  # the package's own code may raise anything
        raise ModelError(f"the package's architecture {arch.get('callable')} failed ({one_line(exc)})") from None
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"the package's architecture {arch.get('callable')} is not a torch.nn.Module")
    return model


def _architecture(payload: bytes, arch: dict[str, Any]) -> Any:
    """The architecture callable: from a source file in the package, or imported from an installed library."""
    name = str(arch.get("callable"))
    try:
        if arch.get("file"):
            namespace: dict[str, Any] = {"__name__": f"segpipe_package_{name}"}
            code = read_member(payload, str(arch["file"])).decode()
            exec(compile(code, str(arch["file"]), "exec"), namespace)  # the user consented (--trust-model-code)
            return namespace[name]
        return getattr(importlib.import_module(str(arch.get("import_from"))), name)
    except Exception as exc:  # the package's own code may raise anything
        raise ModelError(f"cannot build the package's architecture {name} ({one_line(exc)})") from None


BACKEND = Backend(NAME, "a bioimage.io model package (rdf.yaml or .zip; segpipe[bioimageio])", detect, load, extra=NAME)
