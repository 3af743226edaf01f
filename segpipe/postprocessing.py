"""A model's output activation: how its raw outputs become class logits. Pure numpy.

segpipe stitches, blends and averages K-class logits whose softmax is the class probabilities. ``softmax``
models already give them. A ``sigmoid`` model gives one logit ``z`` for class 1; it becomes ``[0, z]``, whose
softmax is ``[1 - sigmoid(z), sigmoid(z)]`` exactly, and class 1 is chosen where ``sigmoid(z) > threshold``. A
``none`` model gives probabilities ``p``; they become ``log p``, whose softmax is ``p`` again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from segpipe.errors import ConfigError

ACTIVATIONS = ("softmax", "sigmoid", "none")
TINY = float(np.finfo(np.float32).tiny)  # probabilities are clamped to this before their log


@dataclass(frozen=True)
class Activation:
    """The output activation of a model card.

    Attributes:
        kind: ``softmax`` (K logits), ``sigmoid`` (one logit, two classes) or ``none`` (K probabilities).
        threshold: ``sigmoid`` only: class 1 where the sigmoid is above it, in (0, 1).
    """

    kind: str = "softmax"
    threshold: float = 0.5

    @property
    def output_channels(self) -> int | None:
        """Channels the model itself outputs, when the activation fixes them (``sigmoid``: 1)."""
        return 1 if self.kind == "sigmoid" else None

    def to_logits(self, outputs: np.ndarray) -> np.ndarray:
        """(B, K_out, h, w) model outputs -> (B, K, h, w) float32 class logits."""
        if self.kind == "softmax":
            return outputs
        if self.kind == "none":
            return np.asarray(np.log(np.maximum(outputs, np.float32(TINY)), dtype=np.float32))
        if outputs.ndim != 4 or outputs.shape[1] != 1:
            raise ValueError(f"a sigmoid model must output one channel, got shape {tuple(outputs.shape)}")
        return np.concatenate([np.zeros_like(outputs), outputs], axis=1)

    def label_bias(self) -> np.ndarray | None:
        """(K, 1, 1) float32 added to the logits before the argmax that picks labels, or None (plain argmax)."""
        if self.kind != "sigmoid" or self.threshold == 0.5:
            return None
        cut = math.log(self.threshold / (1.0 - self.threshold))  # sigmoid(z) > t  <=>  z > logit(t)
        return np.array([cut, 0.0], np.float32).reshape(2, 1, 1)

    def to_dict(self) -> dict[str, Any]:
        """As the card writes it: ``{"id": ..., "kwargs": {...}}``."""
        return {"id": self.kind, "kwargs": {"threshold": self.threshold} if self.kind == "sigmoid" else {}}


def parse_activation(value: Any, source: str) -> Activation:
    """A card's ``postprocessing``: a name, or ``{"id": NAME, "kwargs": {...}}``; a ConfigError otherwise."""
    if value is None:
        return Activation()
    if isinstance(value, Activation):
        return value
    entry: Any = {"id": value} if isinstance(value, str) else value
    if not isinstance(entry, Mapping) or not set(entry) <= {"id", "kwargs"} or "id" not in entry:
        raise ConfigError(f"{source}: postprocessing must be softmax, sigmoid or none (or {{id, kwargs}}): {value!r}")
    kind, kwargs = str(entry["id"]), dict(entry.get("kwargs") or {})
    if kind not in ACTIVATIONS:
        raise ConfigError(f"{source}: unknown postprocessing {kind!r} (known: {', '.join(ACTIVATIONS)})")
    allowed = {"threshold"} if kind == "sigmoid" else set()
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ConfigError(f"{source}: postprocessing {kind}: unknown parameter {unknown[0]!r}")
    threshold = kwargs.get("threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise ConfigError(f"{source}: postprocessing sigmoid: threshold must be in (0, 1), got {threshold!r}")
    return Activation(kind, float(threshold))
