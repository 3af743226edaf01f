"""Checks made while planning, before any compute or write: bands, truths, content scans, existing masks.

Each raises one line a user can act on, naming the file and the fault.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
from dask.base import compute
from dask.delayed import delayed

from segpipe.errors import ConfigError, InputError, OutputError
from segpipe.io.images import ImageSource, open_image
from segpipe.io.ledger import STATE_DIR
from segpipe.preprocessing import band_problem
from segpipe.stages.fingerprints import mask_fingerprint
from segpipe.storage import location
from segpipe.tiling import Region, chunk_grid

T = TypeVar("T")

if TYPE_CHECKING:
    from segpipe.config import EvalConfig
    from segpipe.models import ModelRef


@dataclass(frozen=True)
class ImageScan:
    """Value range of an image (NaN/Inf left out) and its count of NaN/Inf pixels."""

    low: float
    high: float
    nonfinite: int
    pixels: int


def check_channels(source: ImageSource, model: ModelRef) -> None:
    """Refuse an image whose band count is not the one the model expects."""
    expected = model.card.in_channels
    if expected is not None and source.channels != expected:
        raise InputError(
            f"{source.path}: image has {source.channels} band(s); model {model.card.name} expects {expected}"
        )
    problem = band_problem(model.card.input_steps, source.channels)
    if problem:
        raise ConfigError(f"{source.path}: model {model.card.name}'s {problem}")


def open_truth(path: str, image: ImageSource, grid: tuple[int, int] | None = None) -> ImageSource:
    """Open the truth of ``image``: one band of integer labels, of the image's size and plane count.

    ``grid``: (rows, columns) of the mask when the model runs on another grid; a truth of that size is taken too.
    """
    truth = open_image(path)
    if truth.channels != 1:
        raise InputError(f"{path}: truth must be a single-band label image, found {truth.channels} bands")
    if (truth.height, truth.width) not in {(image.height, image.width), grid}:
        raise InputError(
            f"{path}: truth is {truth.height} x {truth.width} but image {image.path} is {image.height} x {image.width}"
        )
    if truth.planes not in (1, image.planes):
        raise InputError(f"{path}: truth has {truth.planes} planes but image {image.path} has {image.planes}")
    if np.dtype(truth.dtype).kind not in "uib":
        raise InputError(f"{path}: truth must hold integer class labels, found {np.dtype(truth.dtype)} pixels")
    return truth


def scan_contents(
    image: ImageSource, truth: ImageSource | None, model: ModelRef, config: EvalConfig, chunk: int
) -> None:
    """Reject float pixels that are NaN/Inf and truth labels outside the model's classes, before any write."""
    if np.dtype(image.dtype).kind == "f":
        scan = scan_image(image, chunk)
        if scan.nonfinite:
            raise InputError(
                f"{image.path}: {scan.nonfinite} pixel(s) are NaN or infinite; "
                "segpipe refuses them (replace them, e.g. by 0, before segmenting)"
            )
    if truth is None or config.truth_instances:
        return
    classes = model.card.num_classes
    if config.truth_mapping is not None:
        check_mapping(truth, dict(config.truth_mapping), classes, chunk)
        return
    scan = scan_image(truth, chunk, config.ignore_index)
    if scan.pixels and (scan.low < 0 or scan.high >= classes):
        bad = scan.high if scan.high >= classes else scan.low
        raise InputError(
            f"{truth.path}: truth label {bad:g} is outside the model's classes 0..{classes - 1} "
            "(instance masks: pass --truth-instances; void label: --ignore-index)"
        )


def check_mapping(truth: ImageSource, mapping: dict[int, int], classes: int, chunk: int) -> None:
    """Every instance id in ``truth`` must map to one of the model's classes (read chunk by chunk)."""
    parts = _per_chunk(lambda region: np.unique(truth.read(*region)[0]), chunk_grid(truth.height, truth.width, chunk))
    ids = np.unique(np.concatenate(parts)) if parts else np.array([], np.int64)
    missing = [int(i) for i in ids if int(i) != 0 and int(i) not in mapping]
    if missing:
        raise InputError(
            f"{truth.path}: instance id {missing[0]} has no class in --truth-mapping ({len(missing)} ids lack one)"
        )
    beyond = sorted({c for i, c in mapping.items() if c >= classes and i in set(ids.tolist())})
    if beyond:
        raise InputError(
            f"{truth.path}: --truth-mapping sends instances to class {beyond[0]}, outside the "
            f"model's classes 0..{classes - 1}"
        )


def check_existing_mask(store_url: str, infer_key: str) -> None:
    """Refuse to replace a mask committed under another fingerprint, or a store segpipe did not make.

    An unfinished build of segpipe's own (it holds chunk ledgers) is resumed or restarted.
    """
    store = location(store_url)
    if not store.exists():
        return
    committed = mask_fingerprint(store_url)
    if committed == infer_key or (committed is None and store.child(STATE_DIR).exists()):
        return
    raise OutputError(
        f"{store_url}: holds a mask made from another input, model or settings; "
        "pass --overwrite to replace it, or choose another --out"
    )


def scan_image(source: ImageSource, chunk: int, ignore: int | None = None) -> ImageScan:
    """Range and NaN/Inf count of ``source``, chunk by chunk on the threaded scheduler."""
    parts = _per_chunk(
        lambda region: _scan_chunk(source, region, ignore), chunk_grid(source.height, source.width, chunk)
    )
    finite = [p for p in parts if p[3]]
    return ImageScan(
        low=min((p[0] for p in finite), default=0.0),
        high=max((p[1] for p in finite), default=0.0),
        nonfinite=sum(p[2] for p in parts),
        pixels=sum(p[3] for p in parts),
    )


def _per_chunk(read: Callable[[Region], T], regions: list[Region]) -> list[T]:
    """``read`` of every region, on the threaded scheduler; a single chunk is read in this thread.

    For a small image the scheduler's start (about 5 ms) costs more than the read.
    """
    if len(regions) == 1:
        return [read(regions[0])]
    task = delayed(read, pure=True)
    return list(compute(*[task(r) for r in regions], scheduler="threads"))  # type: ignore[no-untyped-call]


def _scan_chunk(source: ImageSource, region: Region, ignore: int | None) -> tuple[float, float, int, int]:
    data = source.read(*region)
    if ignore is not None:
        data = data[data != ignore]
    finite_mask = np.isfinite(data) if data.dtype.kind == "f" else None
    values = data[finite_mask] if finite_mask is not None else data.reshape(-1)
    nonfinite = int(data.size - values.size)
    if not values.size:
        return 0.0, 0.0, nonfinite, 0
    return float(values.min()), float(values.max()), nonfinite, int(values.size)
