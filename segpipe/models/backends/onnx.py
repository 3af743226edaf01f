"""ONNX models run by ONNX Runtime (optional: ``pip install 'segpipe[onnx]'``).

The session is built from bytes; on a CUDA device the ``CUDAExecutionProvider`` comes first when this
onnxruntime build has it (``onnxruntime-gpu``), else the CPU runs it with a warning.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from segpipe.errors import ModelError, SegpipeWarning, one_line
from segpipe.models.backends.base import Backend, Source, zip_names
from segpipe.models.card import ModelCard

EXTRA = "onnx"


class OnnxModel:
    """An ONNX Runtime session with one image input and logits as its first output."""

    def __init__(self, session: Any) -> None:
        """Wrap ``session``: its input and output names, and its input channels when declared."""
        self.session = session
        first = session.get_inputs()[0]
        self.input_name: str = first.name
        self.output_name: str = session.get_outputs()[0].name
        declared = first.shape[1] if len(first.shape) == 4 else None
        self.input_channels: int | None = declared if isinstance(declared, int) else None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, h, w) float32 -> the model's first output."""
        return np.asarray(self.session.run([self.output_name], {self.input_name: batch})[0])


def detect(source: Source) -> bool:
    """An ``.onnx`` file, or bytes that open like an ONNX ``ModelProto`` (field 1, ``ir_version``, first)."""
    payload = source.payload
    if payload is None:
        return False
    if source.uri.lower().endswith(".onnx"):
        return True
    return zip_names(payload) is None and len(payload) > 1 and payload[0] == 0x08 and 0 < payload[1] < 32


def providers(device: torch.device, available: list[str]) -> list[Any]:
    """Execution providers for ``device``: CUDA first on a CUDA device when available, always CPU last."""
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        warnings.warn(
            "onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu): the ONNX model runs on the CPU",
            SegpipeWarning,
            stacklevel=3,
        )
        return ["CPUExecutionProvider"]
    return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]


def load(payload: bytes, card: ModelCard, device: torch.device) -> OnnxModel:
    """An inference session over ``payload`` on ``device``, using as many threads as torch does."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelError(f"ONNX models need onnxruntime: pip install 'segpipe[{EXTRA}]'") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3  # errors only
    try:
        session = onnxruntime.InferenceSession(
            payload, options, providers=providers(device, onnxruntime.get_available_providers())
        )
        return OnnxModel(session)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... classes
        raise ModelError(f"cannot load ONNX model ({one_line(exc)})") from None


BACKEND = Backend("onnx", "an ONNX model, run by onnxruntime (segpipe[onnx])", detect, load, extra=EXTRA)
