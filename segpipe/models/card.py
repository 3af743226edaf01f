"""The model card: what the pipeline must know about a model, read from JSON or YAML beside the weights.

``model.pt`` or ``model.onnx`` looks for ``model.json``, then ``model.yaml``, then ``model.yml`` in the same
place (a local folder or the same bucket prefix). A card may also be given inline as a mapping.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from segpipe.errors import ConfigError, ModelError
from segpipe.io.bands import check_numbers
from segpipe.objects.grow import InstanceRule, parse_instances
from segpipe.postprocessing import Activation, parse_activation
from segpipe.preprocessing import NORMALIZATION_STEPS, Step, band_problem, parse_steps, step_to_dict
from segpipe.units import DEFAULT_UNIT, PixelSize, canonical_unit, parse_pixel_size, pixel_size

FALLBACK_HALO = 32  # for models that declare neither a halo nor a receptive field
CARD_SUFFIXES = (".json", ".yaml", ".yml")
NORMALIZATIONS = ("percentile", "none")


@dataclass(frozen=True)
class ModelCard:
    """What the pipeline must know about a model.

    Attributes:
        name: shown in logs and MLflow.
        in_channels: bands the model expects (``None``: unknown, e.g. a TorchScript model with no card).
        num_classes: logit channels (0 until a probe has counted them).
        class_names: one name per class.
        size_divisor: tile edges (with halo) are padded to multiples of this.
        halo: default context per side; ``None``: the receptive-field radius if declared, else 32.
        receptive_field: radius in pixels of the input a pixel's output depends on (``None``: unknown).
        normalization: ``percentile`` (per-band 1st..99.8th percentile of the image to 0..1) or ``none``; the
            older spelling of ``preprocessing`` (``percentile`` is ``[scale_range 1..99.8]``).
        architecture: ``{"name": "unet", ...}`` for state_dict files, backend options otherwise; may be empty.
        preprocessing: input steps in the bioimage.io vocabulary (``segpipe.preprocessing``), applied in order.
        postprocessing: the output activation: ``softmax`` (logits), ``sigmoid`` (one logit) or ``none``.
        bands: the image bands the model reads, 1-based and in order (``[4, 3, 2]``); ``None``: every band.
        pixel_size: the pixel size of the model's training data, in ``unit`` (``"0.5um"`` is read as both);
            ``None``: the model runs on the image as stored.
        unit: of ``pixel_size`` (default ``um``).
        tolerance: relative difference from ``pixel_size`` still taken as equal (default 0.05).
        instances: how the classes make objects when the model has a boundary class, e.g. ``{"interior": 1,
            "boundary": 2, "width": 3}``: components of the interior grown into the boundary (``None``: the
            components of each foreground class).
    """

    name: str
    in_channels: int | None
    num_classes: int
    class_names: tuple[str, ...]
    size_divisor: int = 16
    halo: int | None = None
    receptive_field: int | None = None
    normalization: str = "none"
    architecture: dict[str, Any] = field(default_factory=dict)
    preprocessing: tuple[Step, ...] = ()
    postprocessing: Activation = Activation()
    bands: tuple[int, ...] | None = None
    pixel_size: float | None = None
    unit: str | None = None
    tolerance: float | None = None
    instances: InstanceRule | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "inline card") -> ModelCard:
        """A validated card from a mapping; ``source`` names it in errors.

        Raises:
            ModelError: an unknown field or a bad value. ConfigError: a bad preprocessing or postprocessing step.
        """
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ModelError(f"{source}: invalid model card (unknown field {unknown[0]!r})")
        values = dict(data)
        values["class_names"] = tuple(str(n) for n in values.get("class_names") or ())
        values["architecture"] = dict(values.get("architecture") or {})
        values["preprocessing"] = parse_steps(values.get("preprocessing"), source)
        values["postprocessing"] = parse_activation(values.get("postprocessing"), source)
        values.update(_resolution(values, source))
        if values.get("bands") is not None:
            if not isinstance(values["bands"], list | tuple):
                raise ModelError(f"{source}: invalid model card (bands must be a list of 1-based band numbers)")
            values["bands"] = check_numbers(tuple(values["bands"]), f"{source}: card bands")
        count = values.get("num_classes", 0)
        values["instances"] = parse_instances(values.get("instances"), count if isinstance(count, int) else 0, source)
        if values["preprocessing"] and values.get("normalization", "none") != "none":
            raise ConfigError(f"{source}: give preprocessing or normalization, not both")
        try:
            card = cls(**values)
        except TypeError as exc:
            raise ModelError(f"{source}: invalid model card ({exc})") from None
        problem = card._problem()
        if problem:
            raise ModelError(f"{source}: invalid model card ({problem})")
        bands = band_problem(card.input_steps, card.in_channels) if card.in_channels is not None else None
        if bands:
            raise ConfigError(f"{source}: {bands}")
        return card

    @classmethod
    def from_text(cls, text: str | bytes, source: str) -> ModelCard:
        """Parse a JSON card, or a YAML one when ``source`` ends in ``.yaml``/``.yml``."""
        try:
            if source.lower().endswith((".yaml", ".yml")):
                data = _yaml_load(text, source)
            else:
                data = json.loads(text)
        except ValueError as exc:
            raise ModelError(f"{source}: invalid model card ({_first_line(exc)})") from None
        if not isinstance(data, Mapping):
            raise ModelError(f"{source}: invalid model card (expected a mapping, found {type(data).__name__})")
        return cls.from_dict(data, source)

    @classmethod
    def from_json(cls, path: Any) -> ModelCard:
        """Read a card file (JSON, or YAML by suffix) from a local path."""
        try:
            with open(path, "rb") as handle:
                return cls.from_text(handle.read(), str(path))
        except OSError as exc:
            raise ModelError(f"{path}: invalid model card ({exc.strerror or exc})") from None

    @property
    def default_halo(self) -> int:
        """Context per side when the user gives none: the card's halo, else its receptive field, else 32."""
        if self.halo is not None:
            return self.halo
        return self.receptive_field if self.receptive_field is not None else FALLBACK_HALO

    @property
    def input_steps(self) -> tuple[Step, ...]:
        """The preprocessing every window gets: ``preprocessing``, else the steps ``normalization`` stands for."""
        return self.preprocessing or NORMALIZATION_STEPS.get(self.normalization, ())

    @property
    def model_pixel_size(self) -> PixelSize | None:
        """The pixel size the model was trained at, or None when the card declares none."""
        if self.pixel_size is None:
            return None
        return pixel_size(self.pixel_size, self.pixel_size, self.unit or DEFAULT_UNIT, f"model {self.name}")

    @property
    def output_channels(self) -> int:
        """Channels the network itself outputs: 1 for a sigmoid model, else one per class."""
        return self.postprocessing.output_channels or self.num_classes

    def to_dict(self) -> dict[str, Any]:
        """The card as plain JSON-ready data (class names as a list, steps as ``{"id", "kwargs"}``)."""
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        data["preprocessing"] = [step_to_dict(step) for step in self.preprocessing]
        data["postprocessing"] = self.postprocessing.to_dict()
        data["bands"] = None if self.bands is None else list(self.bands)
        if self.instances is None:  # absent rather than null: cards without the rule keep their keys
            del data["instances"]
        else:
            data["instances"] = self.instances.to_dict()
        return data

    def _problem(self) -> str | None:
        """What is wrong with the field values, or None."""
        counts = {"in_channels": self.in_channels, "halo": self.halo, "receptive_field": self.receptive_field}
        for key, value in counts.items():
            if value is not None and (not isinstance(value, int) or value < 0):
                return f"{key} must be a non-negative integer, got {value!r}"
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            return f"num_classes must be an integer, got {self.num_classes!r}"
        if not isinstance(self.size_divisor, int) or self.size_divisor < 1:
            return f"size_divisor must be a positive integer, got {self.size_divisor!r}"
        if self.normalization not in NORMALIZATIONS:
            return f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}"
        if self.class_names and self.num_classes and len(self.class_names) != self.num_classes:
            return f"{len(self.class_names)} class_names for {self.num_classes} classes"
        if self.postprocessing.kind == "sigmoid" and self.num_classes not in (0, 2):
            return f"a sigmoid model has 2 classes (background, foreground), not {self.num_classes}"
        return None


def _resolution(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """``pixel_size``, ``unit`` and ``tolerance`` validated; ``"0.5um"`` split into a value and its unit."""
    size, unit, tolerance = values.get("pixel_size"), values.get("unit"), values.get("tolerance")
    if size is None:
        if unit is not None or tolerance is not None:
            raise ModelError(f"{source}: invalid model card (unit and tolerance need a pixel_size)")
        return {}
    what = f"{source}: card pixel_size"
    if isinstance(size, str):
        parsed = parse_pixel_size(size, unit or DEFAULT_UNIT, what)
        size, unit = parsed.x, parsed.unit
    elif isinstance(size, int | float) and not isinstance(size, bool):
        size, unit = (
            pixel_size(float(size), float(size), unit or DEFAULT_UNIT, what).x,
            canonical_unit(unit or DEFAULT_UNIT, what),
        )
    else:
        raise ModelError(f"{source}: invalid model card (pixel_size must be a number or VALUE[UNIT], got {size!r})")
    if tolerance is not None and (not isinstance(tolerance, int | float) or not 0 <= tolerance < 1):
        raise ModelError(f"{source}: invalid model card (tolerance must be a number in [0, 1), got {tolerance!r})")
    return {"pixel_size": size, "unit": unit, "tolerance": None if tolerance is None else float(tolerance)}


def card_locations(uri: str) -> list[str]:
    """Where a card for the weights at ``uri`` may lie: the same stem with each card suffix."""
    stem, _ = posixpath.splitext(uri)
    return [stem + suffix for suffix in CARD_SUFFIXES]


def _yaml_load(text: str | bytes, source: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise ModelError(f"{source}: YAML model cards need PyYAML (pip install pyyaml), or write JSON") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
