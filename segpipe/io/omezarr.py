"""OME-Zarr (OME-NGFF 0.5, Zarr v3) output: the image and its label mask as multiscale pyramids.

Layout of ``<name>.ome.zarr`` (opens in napari, neuroglancer and the ``ome-zarr`` reader as is)::

    zarr.json            image group: ome.multiscales (axes c, y, x; scale = physical pixel size x 2**level)
    0, 1, ...            the input image (C, Y, X), each level half the size of the one before (2 x 2 mean)
    labels/zarr.json     ome.labels = ["mask"]
    labels/mask/0, 1 ... the predicted classes (Y, X), downsampled by taking every second pixel (labels must
                         not be interpolated); ome.image-label has one colour and class name per label value

Pyramid levels are written chunk by chunk, one Dask task per output chunk, so memory stays at one chunk.
Stores are URLs on any backend (``segpipe.storage``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import zarr
from dask.delayed import delayed
from zarr.errors import ContainsArrayError

from segpipe.executor import Executor, local_executor, task_slots
from segpipe.storage import OWN_FORMAT, create_array, location, open_array, open_group, stored_chunks
from segpipe.tiling import Region, chunk_grid

NGFF_VERSION = "0.5"
SMALLEST_LEVEL = 256  # stop halving once both sides are at most this
MAX_LEVELS = 10
LABEL_COLOURS = [
    (0, 0, 0, 0),
    (255, 215, 0, 255),
    (0, 191, 255, 255),
    (255, 64, 129, 255),
    (124, 252, 0, 255),
    (255, 140, 0, 255),
    (186, 85, 211, 255),
]


def level_count(height: int, width: int) -> int:
    """Levels of the pyramid: halve until both sides are at most SMALLEST_LEVEL (at least one level)."""
    levels, side = 1, max(height, width)
    while side > SMALLEST_LEVEL and levels < MAX_LEVELS:
        side = -(-side // 2)
        levels += 1
    return levels


def _downsample_chunks(src: str, dst: str, regions: Sequence[Region], labels: bool) -> None:
    """Write each of ``regions`` of level ``dst`` from the 2x larger block of level ``src`` (both opened once)."""
    source = open_array(src, mode="r", zarr_format=OWN_FORMAT)
    target = open_array(dst, mode="r+", zarr_format=OWN_FORMAT)
    _downsample_into(source, target, regions, labels)


def _downsample_into(source: zarr.Array[Any], target: zarr.Array[Any], regions: Sequence[Region], labels: bool) -> None:
    """Write each of ``regions`` of ``target`` from the 2x larger block of ``source``, both open."""
    for region in regions:
        block = np.asarray(source[..., 2 * region.y0 : 2 * region.y1, 2 * region.x0 : 2 * region.x1])
        target[..., region.y0 : region.y1, region.x0 : region.x1] = halved(block, labels)


def halved(block: np.ndarray, labels: bool) -> np.ndarray:
    """The next level of ``block`` (its last two axes halved): every other label, or 2 x 2 means of pixels.

    Of a block whose top-left corner is at even coordinates, this is the part of the whole level's reduction.
    """
    return block[..., ::2, ::2] if labels else mean_2x2(block)


MEAN_BAND = 128  # output rows averaged at a time: float64 temporaries of a band, not of a whole block


def mean_2x2(block: np.ndarray) -> np.ndarray:
    """Means of 2 x 2 pixel blocks over the last two axes, in ``block``'s dtype (integers rounded half to even).

    An odd last row or column is averaged with itself. Integers of up to 4 bytes are summed exactly in integers
    (what ``np.rint`` of the float64 mean gives, without float temporaries); others are computed in float64. Band by
    band of output rows, so that the temporaries stay small whatever the block's size.
    """
    h, w = block.shape[-2:]
    out = np.empty((*block.shape[:-2], -(-h // 2), -(-w // 2)), block.dtype)
    lead = [(0, 0)] * (block.ndim - 2)
    exact = block.dtype.kind in "iu" and block.dtype.itemsize <= 4
    for y in range(0, out.shape[-2], MEAN_BAND):
        rows = block[..., 2 * y : 2 * (y + MEAN_BAND), :]
        if exact:
            out[..., y : y + MEAN_BAND, :] = _rounded_mean_2x2(rows, w, lead)
            continue
        band = rows.astype(np.float64)
        padded = np.pad(band, [*lead, (0, band.shape[-2] % 2), (0, w % 2)], "edge")
        means = padded.reshape(*padded.shape[:-2], -1, 2, padded.shape[-1] // 2, 2).mean(axis=(-3, -1))
        out[..., y : y + MEAN_BAND, :] = np.rint(means) if block.dtype.kind in "iub" else means
    return out


def _rounded_mean_2x2(rows: np.ndarray, w: int, lead: list[tuple[int, int]]) -> np.ndarray:
    """``np.rint`` of the 2 x 2 means of integer ``rows`` (half to even), from exact integer sums."""
    band: npt.NDArray[np.signedinteger[Any]] = rows.astype(np.int64 if rows.dtype.itemsize == 4 else np.int32)
    odd = [*lead, (0, band.shape[-2] % 2), (0, w % 2)]
    padded = np.pad(band, odd, "edge") if band.shape[-2] % 2 or w % 2 else band
    pairs = padded[..., 0::2, :] + padded[..., 1::2, :]
    sums = pairs[..., 0::2] + pairs[..., 1::2]
    quarter, rest = sums >> 2, sums & 3  # sums = 4 quarter + rest, rest in 0..3 (for negative sums too)
    return quarter + (rest > 2) + ((rest == 2) & (quarter & 1 == 1))  # type: ignore[no-any-return]


PYRAMID_TASKS_PER_SLOT = 4  # pyramid tasks per task slot of a level: enough to balance, few array opens
MAX_CHUNKS_PER_PYRAMID_TASK = 16


def build_pyramid(
    group: str,
    levels: int,
    chunk: int,
    labels: bool,
    executor: Executor = local_executor,
    first_level_written: frozenset[tuple[int, int]] | None = None,
) -> None:
    """Create levels 1..levels-1 under the group at URL ``group`` from level ``0``, chunk by chunk.

    An output chunk whose 2x larger block holds no stored chunk of the level below (all of it at the fill value,
    as a chunk without foreground is) is not computed: its reduction is the fill value, which zarr would not store
    either. The others are computed by tasks of several consecutive chunks each; a level of at most one chunk to
    compute (a small image's, a large one's top levels) is computed here: the executor's round trip costs more.

    ``first_level_written``: level 1 exists already (``create_level``) and the chunks at these origins of it are
    written (by the infer tasks, ``segpipe.io.first_level``): only its other chunks are computed.
    """
    task = delayed(_downsample_chunks, pure=False)
    root = location(group)
    for level in range(1, levels):
        src, dst = root.child(str(level - 1)).url, root.child(str(level)).url
        source = open_array(src, mode="r", zarr_format=OWN_FORMAT)
        written = first_level_written if level == 1 else None
        if written is None:
            target = create_level(source, dst, chunk)
        else:
            target = open_array(dst, mode="r+", zarr_format=OWN_FORMAT)
        height, width = target.shape[-2:]
        regions = _reading_stored(source, target, chunk_grid(height, width, chunk))
        regions = [r for r in regions if written is None or (r.y0, r.x0) not in written]
        if len(regions) <= 1:
            _downsample_into(source, target, regions, labels)
            continue
        size = _per_task(len(regions), task_slots(executor, "pyramid"))
        groups = [regions[i : i + size] for i in range(0, len(regions), size)]
        executor([task(src, dst, group_regions, labels) for group_regions in groups], "pyramid")


def create_level(source: zarr.Array[Any], dst: str, chunk: int) -> zarr.Array[Any]:
    """The empty next level of ``source`` at URL ``dst`` (its last two axes halved, rounded up), on the chunk grid."""
    height, width = (-(-s // 2) for s in source.shape[-2:])
    lead = tuple(source.shape[:-2])
    return create_array(
        dst,
        shape=(*lead, height, width),
        dtype=source.dtype,
        overwrite=True,
        chunks=(*lead, min(chunk, height), min(chunk, width)),
        fill_value=0,
        dimension_names=getattr(source.metadata, "dimension_names", None),
    )


def _per_task(chunks: int, slots: int) -> int:
    return max(1, min(MAX_CHUNKS_PER_PYRAMID_TASK, -(-chunks // (max(slots, 1) * PYRAMID_TASKS_PER_SLOT))))


def _reading_stored(source: zarr.Array[Any], target: zarr.Array[Any], regions: list[Region]) -> list[Region]:
    """The ``regions`` of ``target`` whose 2x larger block in ``source`` holds a stored chunk.

    All of them when the two fill values differ (a block of ``source``'s fill value would reduce to something
    ``target`` stores) or ``source``'s chunks cannot be listed.
    """
    fill, target_fill = np.asarray(source.fill_value), np.asarray(target.fill_value)
    if fill.shape or np.isnan(fill) or fill != target_fill:
        return regions
    stored = stored_chunks(source)
    if stored is None:
        return regions
    rows, cols = source.chunks[-2:]
    held = {index[-2:] for index in stored}
    kept = []
    for region in regions:
        ys = range(2 * region.y0 // rows, -(-2 * region.y1 // rows))
        xs = range(2 * region.x0 // cols, -(-2 * region.x1 // cols))
        if any((y, x) in held for y in ys for x in xs):
            kept.append(region)
    return kept


def _axes(names: str, unit: str | None) -> list[dict[str, str]]:
    axes = []
    for name in names:
        axis = {"name": name, "type": "channel" if name == "c" else "space"}
        if name != "c" and unit:
            axis["unit"] = unit
        axes.append(axis)
    return axes


def multiscales(
    name: str, axes: str, levels: int, pixel_size: tuple[float, float], unit: str | None
) -> list[dict[str, Any]]:
    """The ``multiscales`` entry: one dataset per level, scale doubling with each level."""
    lead = [1.0] * (len(axes) - 2)
    datasets = [
        {
            "path": str(level),
            "coordinateTransformations": [
                {"type": "scale", "scale": [*lead, pixel_size[0] * 2**level, pixel_size[1] * 2**level]}
            ],
        }
        for level in range(levels)
    ]
    return [{"name": name, "axes": _axes(axes, unit), "datasets": datasets}]


def write_metadata(
    store: str,
    name: str,
    image_levels: int,
    mask_levels: int,
    class_names: tuple[str, ...],
    pixel_size: tuple[float, float] = (1.0, 1.0),
    unit: str | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the NGFF group metadata of the image, the labels group and the mask.

    ``extra`` goes under the image group's ``segpipe`` attribute (provenance, fingerprints, GeoTIFF tags).
    """
    root = location(store)
    image = open_group(root, mode="a", zarr_format=OWN_FORMAT)
    image.attrs.update(
        {
            "ome": {"version": NGFF_VERSION, "multiscales": multiscales(name, "cyx", image_levels, pixel_size, unit)},
            "segpipe": extra or {},
        }
    )
    labels = open_group(root.child("labels"), mode="a", zarr_format=OWN_FORMAT)
    labels.attrs["ome"] = {"version": NGFF_VERSION, "labels": ["mask"]}
    mask = open_group(root.child("labels", "mask"), mode="a", zarr_format=OWN_FORMAT)
    colours: list[Any] = [
        {"label-value": k, "rgba": list(LABEL_COLOURS[k % len(LABEL_COLOURS)])} for k in range(len(class_names))
    ]
    properties: list[Any] = [{"label-value": k, "class": n} for k, n in enumerate(class_names)]
    mask.attrs["ome"] = {
        "version": NGFF_VERSION,
        "multiscales": multiscales("mask", "yx", mask_levels, pixel_size, unit),
        "image-label": {
            "version": NGFF_VERSION,
            "colors": colours,
            "properties": properties,
            "source": {"image": "../../"},
        },
    }


def read_segpipe_attrs(store: str) -> dict[str, Any]:
    """The ``segpipe`` attribute of the OME-Zarr at URL ``store``.

    {} when there is no store, no group there (e.g. an array) or no such attribute. Any other failure
    (unreadable metadata, a network fault) propagates.
    """
    try:
        found = open_group(store, mode="r").attrs.get("segpipe", {})
    except (FileNotFoundError, ContainsArrayError):  # zarr's GroupNotFoundError is a FileNotFoundError
        return {}
    return dict(found) if isinstance(found, dict) else {}
