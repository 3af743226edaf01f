"""The fingerprints an image's outputs are valid under: ingest, infer and done keys.

``ingest`` covers the input and chunking; ``infer`` adds the model (its card, with its preprocessing and output
activation) and every setting that can change a mask pixel (test-time augmentation too); ``done`` adds the truth
and evaluation settings. A key is a short hash of a JSON-able description.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from segpipe.io.omezarr import read_segpipe_attrs
from segpipe.storage import InputIdentity, location

if TYPE_CHECKING:
    from segpipe.config import TilingConfig
    from segpipe.io.images import ImageSource
    from segpipe.models import ModelRef
    from segpipe.stages.settings import RunSettings
    from segpipe.stages.view import InputView


class Tiled(Protocol):
    """What a key needs of a plan: the model and the resolved tiling (``BatchPlan`` is one)."""

    @property
    def model(self) -> ModelRef:
        """The resolved model."""

    @property
    def chunk(self) -> int:
        """Chunk edge."""

    @property
    def tile(self) -> int:
        """Tile edge."""

    @property
    def halo(self) -> int:
        """Halo width."""

    @property
    def stride(self) -> int:
        """Step of the Gaussian window grid."""

    @property
    def tiling(self) -> TilingConfig:
        """The tiling settings as given."""

    @property
    def save_probabilities(self) -> bool:
        """Whether class probabilities are written."""


@dataclass(frozen=True)
class JobKeys:
    """An image's three fingerprints and the input's identity they were computed from."""

    ingest: str
    infer: str
    done: str
    identity: InputIdentity


def fingerprint(parts: dict[str, Any]) -> str:
    """A short, stable hash of a JSON-able description."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def job_keys(
    image: ImageSource, truth: ImageSource | None, plan: Tiled, settings: RunSettings, view: InputView | None = None
) -> JobKeys:
    """The fingerprints of one image (and its truth) under ``plan`` and ``settings``; asks the store for identities.

    ``view`` (bands, level, resampling, foreground) enters the ingest key only where it is not the default, so a
    run without them keeps the keys it always had.
    """
    from segpipe.models import select_device  # torch loads only once the inputs are known to be readable

    identity = location(image.path).identity()
    ingest_parts = {"input": asdict(identity), "plane": image.plane, "chunk": plan.chunk, "version": 2}
    ingest_key = fingerprint({**ingest_parts, **_view_part(image, view, settings, plan)})
    infer_key = fingerprint(
        {
            "ingest": ingest_key,
            "model": plan.model.sha256,
            "format": plan.model.format,
            "card": _card_part(plan.model.card.to_dict()),
            "tile": plan.tile,
            "halo": plan.halo,
            "stride": plan.stride,
            "tiling": asdict(plan.tiling),
            "probabilities": plan.save_probabilities,
            "batch_size": settings.inference.batch_size,
            "device": select_device(settings.inference.device).type,
            "precision": settings.inference.precision,
            **({"tta": settings.inference.tta} if settings.inference.tta != "none" else {}),
            **({"uncertainty": True} if settings.save_uncertainty else {}),
        }
    )
    truth_part = None
    if truth is not None:
        truth_part = {"input": asdict(location(truth.path).identity()), "plane": truth.plane}
    done_parts: dict[str, Any] = {"infer": infer_key, "truth": truth_part, "evaluation": asdict(settings.evaluation)}
    if settings.finds_objects:  # only then: a run without objects keeps the keys it always had
        done_parts["objects"] = asdict(settings.objects)
    done_key = fingerprint(done_parts)
    return JobKeys(ingest_key, infer_key, done_key, identity)


def _view_part(image: ImageSource, view: InputView | None, settings: RunSettings, plan: Tiled) -> dict[str, Any]:
    """What of the input view changes the ingested grid: only the parts that are not the default.

    With a foreground, what the computed tiles read (stitch, tile, halo) decides which parts of chunks are copied.
    """
    parts: dict[str, Any] = {}
    if image.bands is not None:
        parts["bands"] = list(image.bands)
    if view is not None and view.resized:
        parts.update(level=view.level, factor=list(view.factor))
    if settings.pixel_size is not None:
        parts["pixel_size"] = settings.pixel_size
    if view is not None and view.chunks is not None:
        parts["foreground"] = settings.foreground
        parts["copied"] = [plan.tiling.stitch, plan.tile, plan.halo]
    return parts


def _card_part(card: dict[str, Any]) -> dict[str, Any]:
    """The card as the key sees it: default pre/postprocessing left out, so older stores keep their key."""
    if not card.get("preprocessing"):
        card.pop("preprocessing", None)
    if card.get("postprocessing") == {"id": "softmax", "kwargs": {}}:
        card.pop("postprocessing", None)
    for key in ("bands", "pixel_size", "unit", "tolerance"):  # declared only by newer cards
        if card.get(key) is None:
            card.pop(key, None)
    return card


def mask_fingerprint(store: str) -> str | None:
    """The ``infer_key`` an OME-Zarr store was committed under (written last by finalize), or None."""
    key = read_segpipe_attrs(store).get("infer_key")
    return str(key) if key else None
