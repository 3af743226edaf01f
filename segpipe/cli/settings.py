"""Command-line options into validated settings: ``RunSettings`` for ``run`` and ``demo``, the truth mapping."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segpipe.config import EvalConfig, InferenceConfig, LeaseConfig, ObjectsConfig, TilingConfig

if TYPE_CHECKING:
    from segpipe.stages.settings import RunSettings


def run_settings(args: argparse.Namespace, model: str, out: str) -> RunSettings:
    """The run's settings from the command line, validated now, before anything starts."""
    from segpipe.stages.settings import RunSettings

    tiling = TilingConfig(
        chunk=args.chunk,
        tile=args.tile,
        halo=args.halo,
        stitch=args.stitch,
        overlap=args.overlap,
        pad_mode=args.pad_mode,
    )
    inference = InferenceConfig(
        batch_size=args.batch_size, device=args.device, precision=args.precision, tta=args.tta, compile=args.compile
    )
    if args.workers is not None and args.workers <= 0:
        from segpipe.errors import ConfigError

        raise ConfigError(f"--workers must be a positive integer, got {args.workers}")
    mapping = read_mapping(getattr(args, "truth_mapping", None))
    return RunSettings(
        model=model,
        out=absolute(out),  # reports and MLflow params name absolute paths
        tiling=tiling,
        inference=inference,
        evaluation=EvalConfig(getattr(args, "ignore_index", None), getattr(args, "truth_instances", False), mapping),
        overwrite=args.overwrite,
        trust_model_pickle=getattr(args, "trust_model_pickle", False),
        export_tiff=args.export_tiff,
        save_probabilities=args.save_probabilities,
        lease=LeaseConfig(enabled=not args.no_lease, wait=args.wait, seconds=args.lease_seconds),
        objects=_objects(args),
        **_input_view(args),
        trust_model_code=getattr(args, "trust_model_code", False),
        save_uncertainty=args.save_uncertainty,
    )


def _input_view(args: argparse.Namespace) -> dict[str, Any]:
    """``--bands``, ``--level``, ``--pixel-size`` and ``--foreground``, checked now."""
    from segpipe.errors import ConfigError
    from segpipe.io.bands import parse_bands
    from segpipe.units import parse_pixel_size

    bands = getattr(args, "bands", None)
    level = getattr(args, "level", None)
    if level is not None and level < 0:
        raise ConfigError(f"--level must be an integer >= 0, got {level}")
    size = getattr(args, "pixel_size", None)
    if size is not None:
        parse_pixel_size(size)
    return {
        "bands": None if bands is None else parse_bands(bands),
        "level": level,
        "pixel_size": size,
        "foreground": getattr(args, "foreground", "none"),
    }


def _objects(args: argparse.Namespace) -> ObjectsConfig:
    """``--objects`` and its options."""
    return ObjectsConfig(args.objects, args.connectivity, args.simplify, args.export_geojson)


def read_mapping(path: str | None) -> tuple[tuple[int, int], ...] | None:
    """``--truth-mapping FILE``: a JSON object from instance id to class, e.g. ``{"17": 1, "18": 2}``."""
    if path is None:
        return None
    from segpipe.errors import InputError

    try:
        raw = json.loads(Path(path).read_text())
        return tuple(sorted((int(i), int(c)) for i, c in raw.items()))
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise InputError(f"{path}: not a JSON object from instance id to class ({exc})") from None


def absolute(url: str) -> str:
    """A local path made absolute; a URL (``s3://...``) as given."""
    from segpipe.storage import location

    return location(url).url
