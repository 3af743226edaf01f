"""Old import path of the model API, kept so existing callers work; new code imports from ``segpipe.models``."""

from __future__ import annotations

from segpipe.models.backends.builtin import BUILTIN_NAME, BUILTIN_WEIGHTS, WEIGHTS_DIR
from segpipe.models.cache import install_model, load_predictor, loaded_models, model_payload
from segpipe.models.card import FALLBACK_HALO, ModelCard
from segpipe.models.predictor import Predictor, select_device
from segpipe.models.ref import ModelRef
from segpipe.models.resolve import PROBE_EDGE, resolve_model

__all__ = [
    "BUILTIN_NAME",
    "BUILTIN_WEIGHTS",
    "FALLBACK_HALO",
    "PROBE_EDGE",
    "WEIGHTS_DIR",
    "ModelCard",
    "ModelRef",
    "Predictor",
    "install_model",
    "load_predictor",
    "loaded_models",
    "model_payload",
    "resolve_model",
    "select_device",
]
