"""Uncertainty without truth: each pixel's entropy of its (test-time-augmentation averaged) softmax. Pure numpy.

The entropy ``-sum_k p_k log p_k`` is in nats: 0 where the model is sure, ``log K`` where every class is equally
likely (0.69 for two classes). A pixel counts as uncertain above ``UNCERTAIN_NATS``.
"""

from __future__ import annotations

import numpy as np

UNCERTAIN_NATS = 0.5  # a two-class pixel above it has its top class below about 0.8
TINY = float(np.finfo(np.float32).tiny)  # probabilities are clamped to this before their log


def entropy(probabilities: np.ndarray) -> np.ndarray:
    """(h, w) float32 entropy in nats of (K, h, w) class ``probabilities`` (a softmax over axis 0)."""
    logs = np.log(np.maximum(probabilities, np.float32(TINY)))
    logs *= probabilities
    return np.asarray(-logs.sum(axis=0, dtype=np.float32), dtype=np.float32)


def uncertain_pixels(values: np.ndarray) -> int:
    """How many of the entropies ``values`` are above ``UNCERTAIN_NATS``."""
    return int(np.count_nonzero(values > UNCERTAIN_NATS))
