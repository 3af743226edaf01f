"""Models: a card, a ``Predictor`` (``predict(batch) -> logits``), backends per format and sources.

There is one backend per format, found through a registry (``segpipe.models.backends``), and one source per place models
come from (a path, a URL, ``builtin``, ``models:/NAME@ALIAS``), found through a registry keyed by scheme
(``segpipe.models.sources``). Workers own their models: ``install_model`` hands them the bytes once, ``load_predictor``
builds each model once per process and device. ``segpipe.models.register`` (``register_model``) is imported on demand.
"""

from segpipe.models.backends import Backend, register_backend, registered_backends, unregister_backend
from segpipe.models.backends.builtin import BUILTIN_NAME
from segpipe.models.cache import install_model, load_predictor, loaded_models, model_payload, uninstall_model
from segpipe.models.card import ModelCard
from segpipe.models.predictor import Predictor, select_device
from segpipe.models.ref import ModelRef, RegistryEntry
from segpipe.models.resolve import resolve_model
from segpipe.models.sources import ModelSource, register_source, registered_sources, source_for, unregister_source

__all__ = [
    "BUILTIN_NAME",
    "Backend",
    "ModelCard",
    "ModelRef",
    "ModelSource",
    "Predictor",
    "RegistryEntry",
    "install_model",
    "load_predictor",
    "loaded_models",
    "model_payload",
    "register_backend",
    "register_source",
    "registered_backends",
    "registered_sources",
    "resolve_model",
    "select_device",
    "source_for",
    "uninstall_model",
    "unregister_backend",
    "unregister_source",
]
