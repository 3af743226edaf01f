"""Intensity normalization shared by training and inference. Pure numpy.

``percentile`` maps each band's ``LOW_PERCENTILE`` to 0 and ``HIGH_PERCENTILE`` to 1 (as csbdeep/stardist do),
with the percentiles measured on a strided sample of the whole image, so every tile of an image is scaled
the same way and tiled inference equals whole-image inference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.8
MAX_SAMPLES = 1 << 20


@dataclass(frozen=True)
class StatsRequest:
    """What a statistics pass measures beyond each band's ``LOW_PERCENTILE``..``HIGH_PERCENTILE`` range.

    Attributes:
        percentiles: further percentiles (0..100) of each band.
        moments: each band's mean and standard deviation.
    """

    percentiles: tuple[float, ...] = ()
    moments: bool = False


@dataclass(frozen=True)
class BandStats:
    """Per-band statistics of an image's pixel sample.

    Attributes:
        low: the ``LOW_PERCENTILE`` of each band (``percentile`` normalization maps it to 0).
        high: the ``HIGH_PERCENTILE`` of each band (mapped to 1).
        mean: each band's mean (empty when not measured).
        std: each band's standard deviation (empty when not measured).
        percentiles: further ``(percent, per-band values)`` pairs a model's preprocessing asked for.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    percentiles: tuple[tuple[float, tuple[float, ...]], ...] = ()

    @classmethod
    def from_samples(cls, samples: np.ndarray, want: StatsRequest | None = None) -> BandStats:
        """Stats of a (C, N) sample of pixels, with what ``want`` asks for beyond the range; NaNs are ignored."""
        want = want or StatsRequest()
        samples = samples.reshape(samples.shape[0], -1).astype(np.float64)
        low = np.nanpercentile(samples, LOW_PERCENTILE, axis=1)
        high = np.nanpercentile(samples, HIGH_PERCENTILE, axis=1)
        extra = sorted({float(q) for q in want.percentiles} - {LOW_PERCENTILE, HIGH_PERCENTILE})
        moments = [_moments(band[~np.isnan(band)]) for band in samples] if want.moments else []
        return cls(
            _floats(low),
            _floats(high),
            tuple(m[0] for m in moments),
            tuple(m[1] for m in moments),
            tuple((q, _floats(np.nanpercentile(samples, q, axis=1))) for q in extra),
        )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> BandStats:
        """From the JSON form ``dataclasses.asdict`` gives (as stored in an OME-Zarr's attributes)."""

        def floats(key: str) -> tuple[float, ...]:
            return tuple(float(v) for v in values.get(key) or ())

        extra = tuple((float(q), tuple(float(v) for v in vs)) for q, vs in values.get("percentiles") or ())
        return cls(floats("low"), floats("high"), floats("mean"), floats("std"), extra)

    def percentile(self, percent: float) -> tuple[float, ...]:
        """Each band's ``percent`` percentile; a ValueError if it was not measured."""
        if percent == LOW_PERCENTILE:
            return self.low
        if percent == HIGH_PERCENTILE:
            return self.high
        for measured, values in self.percentiles:
            if measured == percent:
                return values
        raise ValueError(f"the {percent:g}th percentile was not measured (measured: {self.measured()})")

    def measured(self) -> str:
        """The percentiles on hand, e.g. ``1, 99.8``."""
        return ", ".join(f"{q:g}" for q in (LOW_PERCENTILE, HIGH_PERCENTILE, *(q for q, _ in self.percentiles)))


def _moments(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation, summed exactly (``math.fsum``): the same whatever order the chunks came in."""
    if not values.size:
        return math.nan, math.nan
    mean = math.fsum(values) / values.size
    return mean, math.sqrt(math.fsum((values - mean) ** 2) / values.size)


def _floats(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def sample_stride(height: int, width: int) -> int:
    """Stride that keeps a strided sample of the image under ``MAX_SAMPLES`` pixels per band."""
    return max(1, int(np.ceil(np.sqrt(height * width / MAX_SAMPLES))))


def apply(data: np.ndarray, stats: BandStats | None) -> np.ndarray:
    """(C, ...) pixels -> float32; scaled by ``stats`` when given, else cast unchanged."""
    out = data.astype(np.float32, copy=True)
    if stats is None:
        return out
    return scale_in_place(out, stats.low, stats.high)


def scale_in_place(out: np.ndarray, low: Iterable[float], high: Iterable[float], eps: float = 1e-6) -> np.ndarray:
    """Map float32 (C, ...) ``out`` in place so that ``low[c]`` goes to 0 and ``high[c]`` to 1 (one value: all)."""
    lows = np.asarray(tuple(low), np.float32).reshape(-1, *([1] * (out.ndim - 1)))
    highs = np.asarray(tuple(high), np.float32).reshape(lows.shape)
    out -= lows
    out /= np.maximum(highs - lows, np.float32(eps))
    return out
