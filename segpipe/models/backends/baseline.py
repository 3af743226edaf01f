"""A classical segmenter selectable like any model: threshold the per-band mean, then a binary opening.

Specs: ``baseline`` (fixed threshold ``DEFAULT_THRESHOLD``), ``baseline:<t>`` (fixed threshold ``t``) and
``baseline:otsu`` (Otsu's threshold, computed on each tile). Inputs are percentile-normalised by the pipeline
(the image's 1st..99.8th percentile -> 0..1), so a fixed threshold means the same everywhere in an image.

Receptive field: the opening (an erosion, then a dilation, each by a disk of radius ``r``) makes a pixel's
output depend on inputs within ``2 r``; with a fixed threshold that is the whole story, so tiled output equals
whole-image output for any halo >= 2 r. Otsu's threshold depends on the whole tile: not translation-invariant,
so ``baseline:otsu`` declares no receptive field and tiled output differs from whole-image output.

Output: 2-class logits (background 0, foreground +/-``LOGIT``), so argmax, softmax and metrics work as for a net.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import ndimage

from segpipe.errors import ModelError
from segpipe.models.backends.base import Backend, Named, Source
from segpipe.models.card import ModelCard

SPEC = "baseline"
DEFAULT_THRESHOLD = 0.25  # of the normalised range; see the module docstring and the report for the choice
OPENING_RADIUS = 2
OTSU_FLOOR = 0.1  # Otsu on a tile with no foreground splits the noise; below this floor the tile stays background
LOGIT = 4.0
CLASS_NAMES = ("background", "foreground")


@dataclass(frozen=True)
class BaselineConfig:
    """``threshold``: fixed, on the normalised mean (``None``: Otsu per tile); ``radius``: opening disk."""

    threshold: float | None = DEFAULT_THRESHOLD
    radius: int = OPENING_RADIUS


class BaselineModel:
    """Threshold + binary opening as a ``predict(batch) -> logits`` model."""

    def __init__(self, config: BaselineConfig) -> None:
        """Keep ``config`` and build the disk-shaped opening element of its ``radius``."""
        self.config = config
        self.structure = disk(config.radius)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(B, C, h, w) -> (B, 2, h, w) logits: 0 for background, +LOGIT / -LOGIT for foreground."""
        gray = np.asarray(batch, dtype=np.float32).mean(axis=1)
        logits = np.zeros((gray.shape[0], 2, *gray.shape[1:]), np.float32)
        for i, image in enumerate(gray):
            foreground = ndimage.binary_opening(image > self.threshold(image), structure=self.structure)
            logits[i, 1] = np.where(foreground, LOGIT, -LOGIT)
        return logits

    def threshold(self, image: np.ndarray) -> float:
        """The fixed threshold, or Otsu's for this tile (never below ``OTSU_FLOOR``)."""
        if self.config.threshold is not None:
            return self.config.threshold
        return max(otsu_threshold(image), OTSU_FLOOR)


def disk(radius: int) -> np.ndarray:
    """Boolean disk ``y^2 + x^2 <= r^2`` of shape (2 r + 1, 2 r + 1)."""
    yy, xx = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return np.asarray(yy**2 + xx**2 <= radius**2)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the bin edge ``t`` maximising ``w0(t) w1(t) (mu0(t) - mu1(t))^2`` over a histogram."""
    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.max() <= finite.min():
        return float(finite.max()) if finite.size else 0.0  # constant: nothing lies above it
    counts, edges = np.histogram(finite, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(counts * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    return float(edges[int(np.argmax(w0 * w1 * (mu0 - mu1) ** 2)) + 1])


def parse(spec: str) -> BaselineConfig:
    """``baseline`` | ``baseline:otsu`` | ``baseline:<threshold>`` -> its configuration."""
    option = spec.partition(":")[2]
    if not option:
        return BaselineConfig()
    if option == "otsu":
        return BaselineConfig(threshold=None)
    try:
        return BaselineConfig(threshold=float(option))
    except ValueError:
        raise ModelError(f"{spec}: unknown baseline; use baseline, baseline:otsu or baseline:<threshold>") from None


def detect(source: Source) -> bool:
    """The spec ``baseline`` or ``baseline:<option>``."""
    return source.payload is None and (source.uri == SPEC or source.uri.startswith(SPEC + ":"))


def named(spec: str) -> Named:
    """The configuration as JSON bytes (so it has a sha256 and travels like weights), and an honest card."""
    config = parse(spec)
    reach = 2 * config.radius
    fixed = config.threshold is not None
    card = ModelCard(
        name=spec,
        in_channels=None,  # any band count: the bands are averaged
        num_classes=2,
        class_names=CLASS_NAMES,
        size_divisor=1,
        halo=reach if fixed else None,
        receptive_field=reach if fixed else None,
        normalization="percentile",
        architecture={"name": SPEC, **asdict(config)},
    )
    per_tile = f"{spec}: Otsu's threshold is computed per tile, so tiled output differs from whole-image output"
    notes = () if fixed else (per_tile,)
    payload = json.dumps(asdict(config), sort_keys=True).encode()
    return Named(payload, card, spec, notes)


def load(payload: bytes, card: ModelCard, device: torch.device) -> BaselineModel:
    """The segmenter its JSON configuration describes (runs on the CPU whatever ``device`` is)."""
    try:
        return BaselineModel(BaselineConfig(**json.loads(payload)))
    except (ValueError, TypeError) as exc:
        raise ModelError(f"invalid baseline configuration ({exc})") from None


BACKEND = Backend(SPEC, "threshold + morphology (baseline, baseline:otsu, baseline:<t>)", detect, load, named)
