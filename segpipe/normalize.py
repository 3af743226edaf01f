"""Intensity normalization shared by training and inference. Pure numpy.

``percentile`` maps each band's ``LOW_PERCENTILE`` to 0 and ``HIGH_PERCENTILE`` to 1 (as csbdeep/stardist do),
with the percentiles measured on a strided sample of the whole image, so every tile of an image is scaled
the same way and tiled inference equals whole-image inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.8
MAX_SAMPLES = 1 << 20


@dataclass(frozen=True)
class BandStats:
    """Per-band intensity range: ``low[c]`` maps to 0, ``high[c]`` to 1."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def from_samples(cls, samples: np.ndarray) -> BandStats:
        """Stats of a (C, N) sample of pixels; NaNs are ignored."""
        samples = samples.reshape(samples.shape[0], -1).astype(np.float64)
        low = np.nanpercentile(samples, LOW_PERCENTILE, axis=1)
        high = np.nanpercentile(samples, HIGH_PERCENTILE, axis=1)
        return cls(tuple(float(v) for v in low), tuple(float(v) for v in high))


def sample_stride(height: int, width: int) -> int:
    """Stride that keeps a strided sample of the image under ``MAX_SAMPLES`` pixels per band."""
    return max(1, int(np.ceil(np.sqrt(height * width / MAX_SAMPLES))))


def apply(data: np.ndarray, stats: BandStats | None) -> np.ndarray:
    """(C, ...) pixels -> float32; scaled by ``stats`` when given, else cast unchanged."""
    out = data.astype(np.float32, copy=True)
    if stats is None:
        return out
    low = np.asarray(stats.low, np.float32).reshape(-1, *([1] * (data.ndim - 1)))
    high = np.asarray(stats.high, np.float32).reshape(low.shape)
    out -= low
    out /= np.maximum(high - low, 1e-6)
    return out
