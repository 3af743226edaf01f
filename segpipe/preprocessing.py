"""A model's declared input preprocessing and output activation, in the bioimage.io vocabulary. Pure numpy.

A card's ``preprocessing`` is a list of steps, each ``{"id": NAME, "kwargs": {...}}``, applied in order to every
window (float32 (C, h, w)). A step that measures the image (``scale_range``, ``zero_mean_unit_variance`` without
fixed values) reads the image's ``BandStats``, measured once per image on the ingest's strided sample of the raw
pixels, so every tile is scaled the same way and tiled inference equals whole-image inference; since the raw
image is what is measured, only the first step may measure it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from segpipe import normalize
from segpipe.errors import ConfigError
from segpipe.normalize import BandStats, StatsRequest

Values = tuple[float, ...]  # one value for every band, or one per band
EPS = 1e-6  # bioimage.io's default epsilon


def _per_band(values: Values, out: np.ndarray) -> np.ndarray:
    """``values`` shaped to broadcast over float32 (C, ...) ``out``; a ConfigError for the wrong band count."""
    if len(values) not in (1, out.shape[0]):
        raise ConfigError(f"{len(values)} per-band values for an image of {out.shape[0]} band(s)")
    return np.asarray(values, np.float32).reshape(-1, *([1] * (out.ndim - 1)))


@dataclass(frozen=True)
class ScaleLinear:
    """``x * gain + offset``, each a scalar or one value per band."""

    id: ClassVar[str] = "scale_linear"
    gain: Values = (1.0,)
    offset: Values = (0.0,)

    def apply(self, out: np.ndarray, stats: BandStats | None) -> np.ndarray:
        """Scale float32 (C, ...) ``out`` in place."""
        out *= _per_band(self.gain, out)
        out += _per_band(self.offset, out)
        return out


@dataclass(frozen=True)
class ScaleRange:
    """Each band's ``min_percentile`` of the image to 0 and ``max_percentile`` to 1 (percents, 0..100)."""

    id: ClassVar[str] = "scale_range"
    min_percentile: float = 0.0
    max_percentile: float = 100.0
    eps: float = EPS

    def apply(self, out: np.ndarray, stats: BandStats | None) -> np.ndarray:
        """Scale float32 (C, ...) ``out`` in place by the image's measured percentiles."""
        stats = _required(stats, self.id)
        low, high = stats.percentile(self.min_percentile), stats.percentile(self.max_percentile)
        return normalize.scale_in_place(out, low, high, self.eps)


@dataclass(frozen=True)
class ZeroMeanUnitVariance:
    """``(x - mean) / (std + eps)`` per band: fixed ``mean``/``std``, or (both empty) measured over the image."""

    id: ClassVar[str] = "zero_mean_unit_variance"
    mean: Values = ()
    std: Values = ()
    eps: float = EPS

    def apply(self, out: np.ndarray, stats: BandStats | None) -> np.ndarray:
        """Standardise float32 (C, ...) ``out`` in place."""
        mean, std = self.mean, self.std
        if not mean:
            stats = _required(stats, self.id)
            if not stats.mean:
                raise ValueError(f"{self.id}: the image's mean and std were not measured (StatsRequest(moments=True))")
            mean, std = stats.mean, stats.std
        out -= _per_band(mean, out)
        out /= _per_band(std, out) + np.float32(self.eps)
        return out


@dataclass(frozen=True)
class Clip:
    """Values below ``min`` become ``min``, above ``max`` become ``max`` (either may be None: unbounded)."""

    id: ClassVar[str] = "clip"
    min: float | None = None
    max: float | None = None

    def apply(self, out: np.ndarray, stats: BandStats | None) -> np.ndarray:
        """Clip float32 ``out`` in place."""
        return np.clip(out, self.min, self.max, out=out)


@dataclass(frozen=True)
class Binarize:
    """1.0 where ``x > threshold`` (a scalar or one per band), else 0.0."""

    id: ClassVar[str] = "binarize"
    threshold: Values = (0.5,)

    def apply(self, out: np.ndarray, stats: BandStats | None) -> np.ndarray:
        """Binarize float32 (C, ...) ``out``."""
        return (out > _per_band(self.threshold, out)).astype(np.float32)


@dataclass(frozen=True)
class EnsureDtype:
    """Cast to ``dtype`` (integers: clipped to its range, then truncated) and back to float32 for the model."""

    id: ClassVar[str] = "ensure_dtype"
    dtype: str = "float32"

    def apply(self, out: np.ndarray, stats: BandStats | None) -> np.ndarray:
        """``out`` as ``dtype`` would hold it, as float32."""
        dtype = np.dtype(self.dtype)
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            out = np.clip(out, info.min, info.max)
        return out.astype(dtype).astype(np.float32)


Step = ScaleLinear | ScaleRange | ZeroMeanUnitVariance | Clip | Binarize | EnsureDtype
STEPS: dict[str, type[Step]] = {
    kind.id: kind for kind in (ScaleLinear, ScaleRange, ZeroMeanUnitVariance, Clip, Binarize, EnsureDtype)
}
ALIASES = {"fixed_zero_mean_unit_variance": "zero_mean_unit_variance"}  # bioimage.io 0.5's name for fixed values
NORMALIZATION_STEPS: dict[str, tuple[Step, ...]] = {
    "percentile": (ScaleRange(normalize.LOW_PERCENTILE, normalize.HIGH_PERCENTILE),),
    "none": (),
}


def preprocess(data: np.ndarray, steps: Sequence[Step], stats: BandStats | None) -> np.ndarray:
    """(C, ...) pixels -> float32 after ``steps`` in order; ``stats``: the image's, for steps that measure it."""
    out = data.astype(np.float32, copy=True)
    for step in steps:
        out = step.apply(out, stats)
    return out


def needs_stats(steps: Iterable[Step]) -> bool:
    """Whether any of ``steps`` reads the image's statistics."""
    return any(isinstance(s, ScaleRange) or (isinstance(s, ZeroMeanUnitVariance) and not s.mean) for s in steps)


def stats_needed(steps: Iterable[Step]) -> StatsRequest:
    """What ``steps`` read from the image's statistics (for the statistics pass to measure)."""
    steps = tuple(steps)
    found = {q for s in steps if isinstance(s, ScaleRange) for q in (s.min_percentile, s.max_percentile)}
    moments = any(isinstance(s, ZeroMeanUnitVariance) and not s.mean for s in steps)
    return StatsRequest(tuple(sorted(found)), moments)


def band_problem(steps: Iterable[Step], bands: int) -> str | None:
    """What is wrong with the per-band values of ``steps`` for an image of ``bands`` bands, or None."""
    for index, step in enumerate(steps, 1):
        for name in ("gain", "offset", "mean", "std", "threshold"):
            values = getattr(step, name, ())
            if len(values) not in (0, 1, bands):
                return f"preprocessing step {index} ({step.id}): {len(values)} {name} values for {bands} band(s)"
    return None


def step_to_dict(step: Step) -> dict[str, Any]:
    """A step as the card writes it: ``{"id": ..., "kwargs": {...}}``."""
    kwargs = {name: (list(value) if isinstance(value, tuple) else value) for name, value in vars(step).items()}
    return {"id": step.id, "kwargs": kwargs}


def parse_steps(value: Any, source: str) -> tuple[Step, ...]:
    """The steps of a card's ``preprocessing`` list; a ConfigError naming ``source``, the step and the fault."""
    if value is None:
        return ()
    if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence):
        raise ConfigError(f"{source}: preprocessing must be a list of steps, got {type(value).__name__}")
    steps: list[Step] = []
    for index, entry in enumerate(value, 1):
        try:
            steps.append(parse_step(entry))
        except ConfigError as exc:
            raise ConfigError(f"{source}: preprocessing step {index}: {exc}") from None
        if index > 1 and needs_stats(steps[-1:]):
            raise ConfigError(
                f"{source}: preprocessing step {index} ({steps[-1].id}) measures the image; only the first step may "
                "(the image is measured once, before any step)"
            )
    return tuple(steps)


def parse_step(entry: Any) -> Step:
    """One step from ``{"id": NAME, "kwargs": {...}}`` (or a bare name for a step without parameters)."""
    if isinstance(entry, Step):
        return entry
    if isinstance(entry, str):
        entry = {"id": entry}
    if not isinstance(entry, Mapping) or not set(entry) <= {"id", "kwargs"} or "id" not in entry:
        raise ConfigError(f"expected {{id: NAME, kwargs: {{...}}}}, got {entry!r}")
    name = ALIASES.get(str(entry["id"]), str(entry["id"]))
    if name not in STEPS:
        raise ConfigError(f"unknown step {entry['id']!r} (known: {', '.join(STEPS)})")
    kwargs = dict(entry.get("kwargs") or {})
    unknown = sorted(set(kwargs) - set(STEPS[name].__dataclass_fields__))
    if unknown:
        raise ConfigError(f"{name}: unknown parameter {unknown[0]!r}")
    return _BUILDERS[name](kwargs)


def _required(stats: BandStats | None, step: str) -> BandStats:
    if stats is None:
        raise ValueError(f"preprocessing step {step} measures the image: pass the image's BandStats")
    return stats


def _values(kwargs: Mapping[str, Any], key: str, step: str, default: Values | None = None) -> Values:
    """A scalar or per-band list parameter as a tuple of floats."""
    if key not in kwargs or kwargs[key] is None:
        if default is None:
            raise ConfigError(f"{step}: missing parameter {key!r}")
        return default
    raw = kwargs[key]
    items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    try:
        values = tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise ConfigError(f"{step}: {key} must be a number or a list of numbers, got {raw!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{step}: {key} must be finite numbers, got {raw!r}")
    return values


def _number(kwargs: Mapping[str, Any], key: str, step: str, default: float | None) -> float | None:
    value = kwargs.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{step}: {key} must be a finite number, got {value!r}")
    return float(value)


def _scale_linear(kwargs: Mapping[str, Any]) -> Step:
    if kwargs.get("gain") is None and kwargs.get("offset") is None:
        raise ConfigError("scale_linear: missing parameter 'gain' (or 'offset')")
    gain, offset = _values(kwargs, "gain", "scale_linear", (1.0,)), _values(kwargs, "offset", "scale_linear", (0.0,))
    return ScaleLinear(gain, offset)


def _scale_range(kwargs: Mapping[str, Any]) -> Step:
    low = _number(kwargs, "min_percentile", "scale_range", 0.0)
    high = _number(kwargs, "max_percentile", "scale_range", 100.0)
    eps = _number(kwargs, "eps", "scale_range", EPS)
    assert low is not None and high is not None and eps is not None
    if not 0.0 <= low < high <= 100.0:
        raise ConfigError(f"scale_range: need 0 <= min_percentile < max_percentile <= 100, got {low:g}, {high:g}")
    if eps <= 0:
        raise ConfigError(f"scale_range: eps must be > 0, got {eps:g}")
    return ScaleRange(low, high, eps)


def _zero_mean_unit_variance(kwargs: Mapping[str, Any]) -> Step:
    step = "zero_mean_unit_variance"
    eps = _number(kwargs, "eps", step, EPS)
    assert eps is not None
    if eps < 0:
        raise ConfigError(f"{step}: eps must be >= 0, got {eps:g}")
    fixed = [key for key in ("mean", "std") if kwargs.get(key) is not None]
    if not fixed:
        return ZeroMeanUnitVariance(eps=eps)
    mean, std = _values(kwargs, "mean", step), _values(kwargs, "std", step)
    if len(mean) != len(std):
        raise ConfigError(f"{step}: {len(mean)} mean values but {len(std)} std values")
    if any(s <= 0 for s in std):
        raise ConfigError(f"{step}: std must be > 0 for every band, got {list(std)}")
    return ZeroMeanUnitVariance(mean, std, eps)


def _clip(kwargs: Mapping[str, Any]) -> Step:
    low, high = _number(kwargs, "min", "clip", None), _number(kwargs, "max", "clip", None)
    if low is None and high is None:
        raise ConfigError("clip: missing parameter 'min' (or 'max')")
    if low is not None and high is not None and low > high:
        raise ConfigError(f"clip: min {low:g} is above max {high:g}")
    return Clip(low, high)


def _binarize(kwargs: Mapping[str, Any]) -> Step:
    return Binarize(_values(kwargs, "threshold", "binarize"))


def _ensure_dtype(kwargs: Mapping[str, Any]) -> Step:
    if kwargs.get("dtype") is None:
        raise ConfigError("ensure_dtype: missing parameter 'dtype'")
    try:
        dtype = np.dtype(str(kwargs["dtype"]))
    except TypeError:
        raise ConfigError(f"ensure_dtype: unknown dtype {kwargs['dtype']!r}") from None
    if dtype.kind not in "uif" or dtype.itemsize > 8:
        raise ConfigError(f"ensure_dtype: dtype must be a numeric type, got {kwargs['dtype']!r}")
    return EnsureDtype(dtype.name)


_BUILDERS = {
    "scale_linear": _scale_linear,
    "scale_range": _scale_range,
    "zero_mean_unit_variance": _zero_mean_unit_variance,
    "clip": _clip,
    "binarize": _binarize,
    "ensure_dtype": _ensure_dtype,
}
