"""Safe model loading. Returns a ``Predictor`` that maps a float32 batch (B, C, h, w) to logits (B, K, h, w).

Accepted formats, none of which runs arbitrary pickled code:
- ``builtin``: the U-Net whose weights ship in ``segpipe/models/weights`` (trained by scripts/train_builtin.py);
- a TorchScript file (``torch.jit.save``);
- a U-Net ``state_dict`` saved with ``torch.save``, read with ``torch.load(weights_only=True)``.
A fully pickled model (``torch.save(model)``) runs code when loaded: it is refused unless the caller passes
``trust_pickle=True`` (``--trust-model-pickle``), meant for files the user made. A JSON model card beside the
file (``model.pt`` -> ``model.json``) sets channels, classes, halo and normalization; without one, classes are
found by a probe forward pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import threading
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segpipe.errors import ModelError
from segpipe.models.unet import UNet

WEIGHTS_DIR = Path(__file__).parent / "weights"
BUILTIN_NAME = "builtin"
BUILTIN_WEIGHTS = WEIGHTS_DIR / "unet_nuclei.pt"
PROBE_EDGE = 64
FALLBACK_HALO = 32  # for models that declare neither a halo nor a receptive field


@dataclass(frozen=True)
class ModelCard:
    """What the pipeline must know about a model.

    Attributes:
        name: shown in logs and MLflow.
        in_channels: bands the model expects (``None``: any, e.g. a TorchScript model with no card).
        num_classes: logit channels.
        class_names: one name per class.
        size_divisor: tile edges (with halo) are padded to multiples of this.
        halo: default context per side; ``None``: the receptive-field radius if declared, else 32.
        receptive_field: radius in pixels of the input a pixel's output depends on (``None``: unknown).
        normalization: ``percentile`` (per-band 1st..99.8th percentile of the image to 0..1) or ``none``.
        architecture: ``unet`` config for state_dict files, empty otherwise.
    """

    name: str
    in_channels: int | None
    num_classes: int
    class_names: tuple[str, ...]
    size_divisor: int = 16
    halo: int | None = None
    receptive_field: int | None = None
    normalization: str = "none"
    architecture: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, path: Path) -> ModelCard:
        try:
            data = json.loads(path.read_text())
            data["class_names"] = tuple(data.get("class_names") or ())
            return cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelError(f"{path}: invalid model card ({exc})") from None

    @property
    def default_halo(self) -> int:
        """Context per side when the user gives none: the card's halo, else its receptive field, else 32."""
        if self.halo is not None:
            return self.halo
        return self.receptive_field if self.receptive_field is not None else FALLBACK_HALO

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelRef:
    """A validated, picklable pointer to a model: workers load it from this."""

    format: str  # "builtin" | "torchscript" | "state_dict" | "pickle" (trusted by the user)
    path: str
    sha256: str
    card: ModelCard


class Predictor:
    """A loaded model on one device: ``predictor(batch) -> logits``."""

    def __init__(self, module: torch.nn.Module, card: ModelCard, device: torch.device) -> None:
        self.module = module.to(device).eval()
        self.card = card
        self.device = device

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            inputs = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            return self.module(inputs).float().cpu().numpy()


def resolve_model(spec: str | os.PathLike[str], trust_pickle: bool = False) -> ModelRef:
    """Validate a model spec (``builtin`` or a file path) and return a reference workers can load.

    Loads the model once on the CPU and runs a probe forward pass, so a broken model fails here.
    ``trust_pickle`` allows a fully pickled ``nn.Module`` (which executes code on load).
    """
    spec = str(spec)
    if spec == BUILTIN_NAME:
        path, fmt = BUILTIN_WEIGHTS, "builtin"
    else:
        path = Path(spec)
        if not path.is_file():
            raise ModelError(f"{spec}: no such model file")
        fmt = _detect_format(path)
        if fmt == "state_dict" and trust_pickle and not _holds_plain_weights(path):
            fmt = "pickle"
    card = _read_card(path, fmt)
    ref = ModelRef(fmt, str(path), _sha256(path), card)
    module = _load_module(ref)
    return replace(ref, card=_probe(module, card, spec))


def _detect_format(path: Path) -> str:
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a TorchScript or torch.save file (segpipe never unpickles plain pickle files)")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return "torchscript" if any(n.endswith("constants.pkl") or "/code/" in n for n in names) else "state_dict"


def _holds_plain_weights(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return True


def _read_card(path: Path, fmt: str) -> ModelCard:
    card_path = path.with_suffix(".json")
    if card_path.is_file():
        return ModelCard.from_json(card_path)
    if fmt == "state_dict":
        raise ModelError(
            f"{path}: not TorchScript; as a state_dict it needs a model card at {card_path} naming its "
            "architecture (a fully pickled model loads only with --trust-model-pickle)"
        )
    return ModelCard(name=path.stem, in_channels=None, num_classes=0, class_names=())


def _load_module(ref: ModelRef) -> torch.nn.Module:
    path = Path(ref.path)
    if ref.format == "torchscript":
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # torch raises RuntimeError, ValueError, ... for a bad archive
            raise ModelError(f"{path}: cannot load TorchScript model ({type(exc).__name__}: {exc})") from None
    if ref.format == "pickle":
        return _load_trusted_pickle(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ModelError(
            f"{path}: refused to load: the file holds pickled Python objects, not plain weights; "
            "pass --trust-model-pickle only if you made this file yourself"
        ) from None
    except Exception as exc:
        raise ModelError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None
    return _unet_from_state(path, state, ref.card)


def _load_trusted_pickle(path: Path) -> torch.nn.Module:
    try:
        module = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelError(f"{path}: cannot unpickle model ({type(exc).__name__}: {exc})") from None
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"{path}: pickled object is a {type(module).__name__}, not a torch.nn.Module")
    return module


def _unet_from_state(path: Path, state: Any, card: ModelCard) -> torch.nn.Module:
    if not isinstance(state, dict):
        raise ModelError(f"{path}: expected a state_dict, found {type(state).__name__}")
    if card.architecture.get("name") != "unet":
        raise ModelError(f"{path}: model card architecture must be {{'name': 'unet', ...}}")
    kwargs = {k: v for k, v in card.architecture.items() if k != "name"}
    model = UNet(in_channels=card.in_channels or 1, num_classes=card.num_classes, **kwargs)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not match the card's U-Net ({exc})") from None
    return model


def _probe(module: torch.nn.Module, card: ModelCard, spec: str) -> ModelCard:
    """Run one small forward pass; fill in the class count; check the output shape."""
    channels = card.in_channels or 1
    edge = max(PROBE_EDGE, card.size_divisor)
    try:
        with torch.inference_mode():
            out = module.eval()(torch.zeros(1, channels, edge, edge))
    except Exception as exc:
        raise ModelError(f"{spec}: model failed on a (1, {channels}, {edge}, {edge}) probe input ({exc})") from None
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or tuple(out.shape[2:]) != (edge, edge):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"{spec}: model output is {shape}; expected (batch, classes, {edge}, {edge})")
    classes = int(out.shape[1])
    if classes < 2 or (card.num_classes and classes != card.num_classes):
        raise ModelError(f"{spec}: model outputs {classes} classes; its card says {card.num_classes}")
    names = card.class_names or tuple(f"class_{k}" for k in range(classes))
    return replace(card, num_classes=classes, class_names=names)


def select_device(device: str) -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


_PREDICTORS: dict[tuple[str, str, str], Predictor] = {}
_PREDICTORS_LOCK = threading.Lock()
LOAD_COUNTS: dict[str, int] = {}  # loads per model in this process; tests read it on workers


def load_predictor(ref: ModelRef, device: str = "auto", torch_threads: int | None = None) -> Predictor:
    """Load ``ref`` once per process and device (Dask workers keep it between tasks)."""
    key = (ref.sha256, ref.format, device)
    with _PREDICTORS_LOCK:
        if key not in _PREDICTORS:
            if torch_threads:
                torch.set_num_threads(torch_threads)
            _PREDICTORS[key] = Predictor(_load_module(ref), ref.card, select_device(device))
            LOAD_COUNTS[ref.sha256] = LOAD_COUNTS.get(ref.sha256, 0) + 1
        return _PREDICTORS[key]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
