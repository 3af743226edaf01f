"""The settings a batch run is configured with, and the canary set, as frozen values with a JSON round trip."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from segpipe.config import EvalConfig, InferenceConfig, LeaseConfig, ObjectsConfig, TilingConfig, from_dict
from segpipe.errors import InputError


@dataclass(frozen=True)
class RunSettings:
    """Everything a batch run is configured with; ``out`` is a path or URL (``s3://bucket/prefix``)."""

    model: str = "builtin"
    out: str = "segpipe-out"
    tiling: TilingConfig = field(default_factory=TilingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    overwrite: bool = False
    trust_model_pickle: bool = False
    export_tiff: bool = False
    save_probabilities: bool = False
    lease: LeaseConfig = field(default_factory=LeaseConfig)
    objects: ObjectsConfig = field(default_factory=ObjectsConfig)
    bands: tuple[int, ...] | None = None  # 1-based, as GDAL numbers them; None: the card's, else every band
    level: int | None = None  # a stored level picked by hand; None: the one the model's pixel size asks for
    pixel_size: str | None = None  # VALUE[UNIT] that sets or overrides the images' level-0 pixel size
    foreground: str = "none"  # auto, none, nodata, tissue, or a mask image's URL
    trust_model_code: bool = False
    save_uncertainty: bool = False

    @property
    def finds_objects(self) -> bool:
        """Whether the objects stage runs: asked for, or instance truth to match objects against."""
        return self.objects.enabled or self.evaluation.truth_instances

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able values (a Prefect deployment's parameters); ``from_dict`` gives the settings back."""
        values = asdict(self)
        mapping = self.evaluation.truth_mapping
        values["evaluation"]["truth_mapping"] = [list(pair) for pair in mapping] if mapping is not None else None
        values["bands"] = None if self.bands is None else list(self.bands)
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunSettings:
        """From plain values (Prefect deployments pass parameters as JSON); unknown keys are refused.

        Raises:
            InputError: an unknown key. ConfigError: a bad value.
        """
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown settings: {sorted(unknown)}")
        return cls(
            model=values.get("model", "builtin"),
            out=values.get("out", "segpipe-out"),
            tiling=from_dict(TilingConfig, values.get("tiling") or {}),
            inference=from_dict(InferenceConfig, values.get("inference") or {}),
            evaluation=_eval_config(values.get("evaluation") or {}),
            overwrite=bool(values.get("overwrite", False)),
            export_tiff=bool(values.get("export_tiff", False)),
            save_probabilities=bool(values.get("save_probabilities", False)),
            trust_model_pickle=bool(values.get("trust_model_pickle", False)),
            lease=from_dict(LeaseConfig, values.get("lease") or {}),
            objects=from_dict(ObjectsConfig, values.get("objects") or {}),
            bands=None if values.get("bands") is None else tuple(int(b) for b in values["bands"]),
            level=None if values.get("level") is None else int(values["level"]),
            pixel_size=values.get("pixel_size"),
            foreground=str(values.get("foreground", "none")),
            trust_model_code=bool(values.get("trust_model_code", False)),
            save_uncertainty=bool(values.get("save_uncertainty", False)),
        )


@dataclass(frozen=True)
class CanarySet:
    """A fixed labelled validation set scored every run (outputs under ``<out>/canary/``).

    Tonight's canary mean Dice and class fractions are compared with the last ``nights`` run dates, within
    ``tolerance``.
    """

    images: tuple[str, ...]
    truths: tuple[str, ...]
    tolerance: float = 0.02
    nights: int = 7

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CanarySet:
        """From JSON-like values: ``{"images": [...], "truths": [...], "tolerance": 0.02, "nights": 7}``."""
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown or not values.get("images") or len(values.get("truths") or ()) != len(values["images"]):
            raise InputError(
                f"canary: give images and one truth per image (and optionally tolerance, nights): {values}"
            )
        return cls(
            tuple(values["images"]),
            tuple(values["truths"]),
            float(values.get("tolerance", 0.02)),
            int(values.get("nights", 7)),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able values; ``from_dict`` gives the set back."""
        return {
            "images": list(self.images),
            "truths": list(self.truths),
            "tolerance": self.tolerance,
            "nights": self.nights,
        }


def settings_from_dict(values: dict[str, Any]) -> RunSettings:
    """``RunSettings.from_dict``."""
    return RunSettings.from_dict(values)


def _eval_config(values: dict[str, Any]) -> EvalConfig:
    """EvalConfig from JSON-like values; ``truth_mapping`` may be ``{"17": 1, ...}`` or ``[[17, 1], ...]``."""
    mapping = values.get("truth_mapping")
    if isinstance(mapping, dict):
        mapping = mapping.items()
    pairs = tuple(sorted((int(i), int(c)) for i, c in mapping)) if mapping is not None else None
    return from_dict(EvalConfig, {**values, "truth_mapping": pairs})
