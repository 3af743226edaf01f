"""The level a model reads and the resampling left to do: the model's pixel size against the image's levels.

The stored level closest to the model's pixel size without being coarser is read; what is left between that
level and the model's pixel size is resampled on the fly (``segpipe.io.resample``). Units convert (an image in
micrometres, a model in nanometres); a length and an angle (a GeoTIFF in degrees) do not.
"""

from __future__ import annotations

from dataclasses import dataclass

from segpipe.errors import ConfigError
from segpipe.io.levels import ImageLevels, Level
from segpipe.units import PixelSize, convert

DEFAULT_RTOL = 0.05  # relative tolerance of a model's pixel size when none is declared


@dataclass(frozen=True)
class LevelChoice:
    """The level to read for a model, and the resampling left to do on the fly.

    Attributes:
        level: the stored level read.
        factor: level pixels per model-grid pixel (y, x): 1 reads as stored, 2 averages 2 x 2, below 1 enlarges.
        pixel_size: the pixel size of the grid the model runs on (and the mask is written at), in the image's
            unit; None when neither the image nor the model declares one.
    """

    level: Level
    factor: tuple[float, float]
    pixel_size: PixelSize | None

    @property
    def resampled(self) -> bool:
        """Whether pixels are resampled between reading and the model."""
        return self.factor != (1.0, 1.0)


def choose_level(
    levels: ImageLevels, model: PixelSize | None, rtol: float = DEFAULT_RTOL, level: int | None = None
) -> LevelChoice:
    """The stored level closest to the model's pixel size without being coarser, and the factor left.

    A level within ``rtol`` of the model's pixel size counts as equal (factor 1), and a factor within ``rtol``
    of a whole number is rounded to it (an exact block mean). When every level is coarser than the model, the
    finest is read and enlarged (factor below 1). ``level`` picks a level by hand (``--level N``).

    Raises:
        ConfigError: the model declares a pixel size and the image none; units that do not convert (an
            image in degrees, a model in metres); ``level`` does not exist.
    """
    if level is not None:
        chosen = levels.level(level)
        if model is None or chosen.pixel_size is None:
            return LevelChoice(chosen, (1.0, 1.0), chosen.pixel_size)
        return _choice(levels.path, chosen, model, rtol)
    if model is None:
        return LevelChoice(levels.base, (1.0, 1.0), levels.pixel_size)
    if levels.pixel_size is None:
        raise ConfigError(
            f"{levels.path}: the model expects {model} pixels but the image declares no pixel size; "
            "give it with --pixel-size VALUE[UNIT] (e.g. --pixel-size 0.25um)"
        )
    sizes = [_in_unit(levels.path, lv, model.unit) for lv in levels.levels]
    finer = [i for i, s in enumerate(sizes) if s.y <= model.y * (1 + rtol) and s.x <= model.x * (1 + rtol)]
    if finer:
        index = max(finer, key=lambda i: sizes[i].y * sizes[i].x)
    else:
        index = min(range(len(sizes)), key=lambda i: sizes[i].y * sizes[i].x)
    return _choice(levels.path, levels.levels[index], model, rtol)


def _choice(path: str, level: Level, model: PixelSize, rtol: float) -> LevelChoice:
    assert level.pixel_size is not None
    size = _in_unit(path, level, model.unit)
    factor = (_snap(model.y / size.y, rtol), _snap(model.x / size.x, rtol))
    return LevelChoice(level, factor, level.pixel_size.scaled(*factor))


def _snap(factor: float, rtol: float) -> float:
    """``factor`` rounded to a whole number (or to 1) when within ``rtol`` of it."""
    whole = max(1.0, float(round(factor)))
    return whole if abs(factor - whole) <= rtol * whole else factor


def _in_unit(path: str, level: Level, unit: str) -> PixelSize:
    assert level.pixel_size is not None
    size = level.pixel_size
    what = f"{path}: level {level.index}'s pixel size ({size}) vs the model's unit"
    return PixelSize(convert(size.y, size.unit, unit, what), convert(size.x, size.unit, unit, what), unit)


__all__ = ["DEFAULT_RTOL", "LevelChoice", "choose_level"]
