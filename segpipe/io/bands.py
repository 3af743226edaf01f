"""The model's input bands picked, in order, out of a multi-band image (``--bands 4,3,2`` or the card's ``bands``).

Bands are numbered from 1, as GDAL numbers them; an ``ImageSource`` keeps them 0-based and reads only those, so
every stage (ingest, statistics, band checks) sees the picked bands alone.
"""

from __future__ import annotations

from dataclasses import replace

from segpipe.errors import ConfigError
from segpipe.io.images import ImageSource


def parse_bands(text: str) -> tuple[int, ...]:
    """``4,3,2`` as the 1-based band numbers (4, 3, 2); ``select_bands`` checks them against each image.

    Raises:
        ConfigError: not a comma-separated list of integers.
    """
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--bands {text!r}: give 1-based band numbers separated by commas, e.g. 4,3,2") from None


def check_numbers(bands: tuple[int, ...], what: str) -> tuple[int, ...]:
    """``bands`` if they are distinct positive integers (1-based), else a ConfigError naming ``what``."""
    if not bands or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in bands):
        raise ConfigError(f"{what}: bands are numbered from 1, got {list(bands)}")
    repeated = sorted({b for b in bands if bands.count(b) > 1})
    if repeated:
        raise ConfigError(f"{what}: band {repeated[0]} is given twice in {list(bands)}")
    return bands


def select_bands(source: ImageSource, bands: tuple[int, ...] | None) -> ImageSource:
    """``source`` reading only ``bands`` (1-based), in that order; ``source`` itself for None.

    Raises:
        ConfigError: a band the image does not have, or one given twice, naming the file.
    """
    if bands is None:
        return source
    check_numbers(bands, f"{source.path}: bands")
    stored = source.channels if source.bands is None else len(source.bands)
    beyond = [b for b in bands if b > stored]
    if beyond:
        raise ConfigError(f"{source.path}: band {beyond[0]} does not exist (the image has bands 1..{stored})")
    picked = tuple(b - 1 for b in bands) if source.bands is None else tuple(source.bands[b - 1] for b in bands)
    return replace(source, bands=picked, shape=(len(picked), source.height, source.width))


__all__ = ["check_numbers", "parse_bands", "select_bands"]
