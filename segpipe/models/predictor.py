"""A loaded model on one device: ``predictor.predict(batch) -> logits`` (float32 (B, C, h, w) -> (B, K, h, w))."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from segpipe.models.card import ModelCard


@runtime_checkable
class BatchModel(Protocol):
    """A model that is not a ``torch.nn.Module`` (ONNX Runtime, the classical baseline): numpy in, numpy out."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, h, w) float32 -> (B, K, h, w) logits."""
        ...


LoadedModel = torch.nn.Module | BatchModel


class Predictor:
    """A loaded model on one device: ``predictor.predict(batch)`` (or ``predictor(batch)``) -> logits."""

    def __init__(self, model: LoadedModel, card: ModelCard, device: torch.device) -> None:
        self.card = card
        self.device = device
        self.module: torch.nn.Module | None = None
        self._model: BatchModel | None = None
        if isinstance(model, torch.nn.Module):
            self.module = model.to(device).eval()
        else:
            self._model = model

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, h, w) float32 pixels -> (B, K, h, w) float32 logits, as numpy on the host."""
        inputs = np.ascontiguousarray(batch, dtype=np.float32)
        if self._model is not None:
            return np.asarray(self._model.predict(inputs), dtype=np.float32)
        assert self.module is not None
        with torch.inference_mode():
            output = self.module(torch.from_numpy(inputs).to(self.device))
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"model returned a {type(output).__name__}, not a tensor")
        return output.float().cpu().numpy()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Alias of :meth:`predict`."""
        return self.predict(batch)

    def __repr__(self) -> str:
        kind = type(self.module or self._model).__name__
        return f"Predictor({self.card.name!r}, {kind}, device={self.device})"


def select_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks this process's CUDA device when one is available, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
