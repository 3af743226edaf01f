"""Physical units of pixel sizes: parsing ``VALUE[UNIT]`` strings and converting between length units.

Units are kept under one short canonical name (``nm``, ``um``, ``mm``, ``cm``, ``m``, ``km``, and ``deg`` for a
geographic CRS); the spellings files use (``µm``, ``micron``, OME-NGFF's ``micrometer``, ``metre``, ...) map to
them. Lengths convert into each other; a length and an angle do not.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from segpipe.errors import ConfigError

LENGTHS = {"nm": -9, "um": -6, "mm": -3, "cm": -2, "m": 0, "km": 3}  # metres per unit, as a power of ten
ANGLES = {"deg": 1.0}
ALIASES = {
    "nanometer": "nm",
    "nanometre": "nm",
    "µm": "um",  # micro sign U+00B5
    "μm": "um",  # Greek small mu U+03BC
    "micron": "um",
    "microns": "um",
    "micrometer": "um",
    "micrometre": "um",
    "millimeter": "mm",
    "millimetre": "mm",
    "centimeter": "cm",
    "centimetre": "cm",
    "meter": "m",
    "metre": "m",
    "meters": "m",
    "metres": "m",
    "kilometer": "km",
    "kilometre": "km",
    "degree": "deg",
    "degrees": "deg",
}
DEFAULT_UNIT = "um"
_VALUE_UNIT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([^\d\s.+-][^\s]*)?\s*$")


def canonical_unit(name: str, what: str = "pixel size") -> str:
    """The canonical short name of a unit (``um`` for ``µm``, ``micron`` or ``micrometer``).

    Raises:
        ConfigError: a unit segpipe does not know.
    """
    key = name.strip()
    found = key if key in LENGTHS or key in ANGLES else ALIASES.get(key, ALIASES.get(key.lower()))
    if found is None and key.lower() in LENGTHS:
        found = key.lower()
    if found is None:
        known = ", ".join([*LENGTHS, *ANGLES])
        raise ConfigError(f"{what}: unknown unit {name!r} (known: {known}, and µm, micron, micrometer, meter, ...)")
    return found


def is_length(unit: str) -> bool:
    """Whether ``unit`` (canonical) is a length, so that it converts to the other lengths."""
    return unit in LENGTHS


def convert(value: float, unit: str, to: str, what: str = "pixel size") -> float:
    """``value`` in ``unit`` expressed in ``to`` (both any known spelling).

    Raises:
        ConfigError: an unknown unit, or units of different kinds (a length and an angle).
    """
    source, target = canonical_unit(unit, what), canonical_unit(to, what)
    if source == target:
        return value
    if not (is_length(source) and is_length(target)):
        raise ConfigError(f"{what}: {source} cannot be converted to {target} (not both lengths)")
    power = LENGTHS[source] - LENGTHS[target]  # whole powers of ten: 0.25 um is exactly 250 nm
    return float(value * 10**power if power >= 0 else value / 10**-power)


@dataclass(frozen=True)
class PixelSize:
    """The physical size of one pixel: rows (``y``) and columns (``x``) in ``unit`` (canonical name)."""

    y: float
    x: float
    unit: str

    def to(self, unit: str) -> PixelSize:
        """The same size in another unit."""
        target = canonical_unit(unit)
        return PixelSize(convert(self.y, self.unit, target), convert(self.x, self.unit, target), target)

    def scaled(self, factor_y: float, factor_x: float) -> PixelSize:
        """The size of a pixel ``factor_y`` x ``factor_x`` times larger (a coarser level)."""
        return PixelSize(self.y * factor_y, self.x * factor_x, self.unit)

    def __str__(self) -> str:
        """``0.5 um``, or ``0.5 x 0.25 um (y x)`` when y and x differ."""
        if self.y == self.x:
            return f"{self.x:g} {self.unit}"
        return f"{self.y:g} x {self.x:g} {self.unit} (y x)"


def pixel_size(y: float, x: float, unit: str, what: str = "pixel size") -> PixelSize:
    """A validated PixelSize: both sides finite and positive, the unit known (stored canonical).

    Raises:
        ConfigError: a side that is zero, negative or not finite, or an unknown unit.
    """
    for side in (y, x):
        if not math.isfinite(side) or side <= 0:
            raise ConfigError(f"{what}: {side:g} is not a positive pixel size")
    return PixelSize(float(y), float(x), canonical_unit(unit, what))


def parse_pixel_size(text: str, default_unit: str = DEFAULT_UNIT, what: str = "--pixel-size") -> PixelSize:
    """Parse ``VALUE[UNIT]`` (``0.5um``, ``500 nm``, ``10m``, ``0.5µm``; no unit: ``default_unit``).

    Raises:
        ConfigError: not a number followed by a unit, a value that is not positive, or an unknown unit.
    """
    match = _VALUE_UNIT.match(text)
    if match is None:
        raise ConfigError(f"{what}: {text!r} is not VALUE[UNIT] (e.g. 0.5um, 500nm, 10m)")
    value = float(match.group(1))
    return pixel_size(value, value, match.group(2) or default_unit, f"{what} {text!r}")


__all__ = [
    "ALIASES",
    "LENGTHS",
    "PixelSize",
    "canonical_unit",
    "convert",
    "is_length",
    "parse_pixel_size",
    "pixel_size",
]
