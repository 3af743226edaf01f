"""Architectures (plain torch) and loaders that return a ``Predictor``: ``predict(batch) -> logits``."""

from segpipe.models.loader import ModelCard, ModelRef, Predictor, load_predictor, resolve_model

__all__ = ["ModelCard", "ModelRef", "Predictor", "load_predictor", "resolve_model"]
