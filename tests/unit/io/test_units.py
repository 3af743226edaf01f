"""Pixel sizes as VALUE[UNIT] strings and their units (segpipe/units.py)."""

from __future__ import annotations

import re

import pytest

from segpipe.errors import ConfigError
from segpipe.units import PixelSize, canonical_unit, convert, parse_pixel_size


@pytest.mark.parametrize(
    ("text", "value", "unit"),
    [
        ("0.5um", 0.5, "um"),
        ("0.5 um", 0.5, "um"),
        ("500nm", 500.0, "nm"),
        ("10m", 10.0, "m"),
        ("0.5µm", 0.5, "um"),  # micro sign
        ("0.5μm", 0.5, "um"),  # Greek mu
        ("2.5e-1mm", 0.25, "mm"),
        ("0.25", 0.25, "um"),  # no unit: micrometres
        ("1km", 1.0, "km"),
        ("3 cm", 3.0, "cm"),
    ],
)
def test_parse_pixel_size(text: str, value: float, unit: str) -> None:
    assert parse_pixel_size(text) == PixelSize(value, value, unit)


@pytest.mark.parametrize(
    ("text", "fault"),
    [("0um", "not a positive"), ("-1um", "not a positive"), ("0.5parsec", "unknown unit"), ("um", "VALUE[UNIT]")],
)
def test_bad_pixel_sizes_are_one_config_error_line(text: str, fault: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fault)) as caught:
        parse_pixel_size(text)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "unit", "to", "expected"),
    [(500, "nm", "um", 0.5), (0.5, "µm", "nm", 500), (10, "m", "km", 0.01), (1, "micrometer", "mm", 1e-3)],
)
def test_lengths_convert(value: float, unit: str, to: str, expected: float) -> None:
    assert convert(value, unit, to) == pytest.approx(expected)


def test_a_length_and_an_angle_do_not_convert() -> None:
    with pytest.raises(ConfigError, match="cannot be converted"):
        convert(1.0, "deg", "m")


@pytest.mark.parametrize(("name", "canonical"), [("micron", "um"), ("Meter", "m"), ("nanometre", "nm"), ("UM", "um")])
def test_spellings_map_to_one_name(name: str, canonical: str) -> None:
    assert canonical_unit(name) == canonical


def test_a_pixel_size_converts_and_scales() -> None:
    size = PixelSize(0.25, 0.5, "um")
    assert size.to("nm") == PixelSize(250.0, 500.0, "nm")
    assert size.scaled(2, 4) == PixelSize(0.5, 2.0, "um")
