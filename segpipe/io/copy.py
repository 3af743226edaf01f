"""Ingest: copy an image, one chunk per task, into a Zarr v3 (C, Y, X) array on the chunk grid.

A strided pixel sample for normalization is collected on the way. Peak memory is one chunk per worker, whatever
the size. Source and destination are URLs on any store (``segpipe.storage``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from dask.delayed import delayed

from segpipe.executor import Executor, local_executor
from segpipe.io.images import ImageSource
from segpipe.io.ledger import ChunkLedger
from segpipe.io.resample import resample_region, source_region
from segpipe.normalize import BandStats, StatsRequest, sample_stride
from segpipe.storage import OWN_FORMAT, Location, create_array, location, open_array
from segpipe.tiling import Region, chunk_grid, strided_sample

Where = str | os.PathLike[str] | Location


@dataclass(frozen=True)
class Grid:
    """The grid an input is copied onto: the model's, over a stored level.

    Attributes:
        shape: (C, rows, columns) of the grid.
        dtype: its pixel type (float when resampled).
        factor: level pixels per grid pixel (y, x); (1, 1) copies the level as stored.
        chunks: the grid chunks copied; None: every chunk (the others stay at the array's fill value, 0).
        sample_mask: the foreground at a chunk's strided sample positions (``region``, ``stride``), or None:
            statistics then come from the foreground pixels only.
        parts: per copied chunk, the part of it copied (what the computed tiles read); the rest of the chunk
            stays at the fill value. None, or a chunk left out: the whole chunk.
    """

    shape: tuple[int, int, int]
    dtype: str
    factor: tuple[float, float] = (1.0, 1.0)
    chunks: frozenset[Region] | None = None
    sample_mask: Callable[[Region, int], np.ndarray | None] | None = None
    parts: Mapping[Region, Region] | None = None

    def part(self, region: Region) -> Region:
        """The part of chunk ``region`` that is copied."""
        return region if self.parts is None else self.parts.get(region, region)


def read_grid(source: ImageSource, region: Region, factor: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Grid pixels ``region``: read as stored, or the level's pixels under it resampled by ``factor``."""
    if factor == (1.0, 1.0):
        return source.read(*region)
    have = source_region(region, factor, source.height, source.width)
    return resample_region(source.read(*have), have, region, factor, source.height, source.width)


def ingest_chunk(
    source: ImageSource,
    dest: str,
    region: Region,
    stride: int,
    ledger: ChunkLedger | None = None,
    factor: tuple[float, float] = (1.0, 1.0),
    part: Region | None = None,
) -> np.ndarray:
    """Copy grid chunk ``region`` (only its ``part``, when given) into the array at URL ``dest``, mark it done.

    Returns:
        The strided (C, n) sample of what was copied.
    """
    copied = part or region
    data = read_grid(source, copied, factor)
    if ledger is not None:
        ledger.check_fence()
    open_array(dest, mode="r+", zarr_format=OWN_FORMAT)[:, copied.y0 : copied.y1, copied.x0 : copied.x1] = data
    if ledger is not None:
        ledger.mark_done(region)
    return strided_sample(data, copied, stride).reshape(data.shape[0], -1)


def sample_chunk(source: ImageSource, region: Region, stride: int) -> np.ndarray:
    """The strided (C, n) sample of one chunk, read without copying."""
    data = source.read(*region)
    return strided_sample(data, region, stride).reshape(data.shape[0], -1)


def ingest(
    source: ImageSource,
    dest: Where,
    chunk: int,
    executor: Executor = local_executor,
    ledger: ChunkLedger | None = None,
    want: StatsRequest | None = None,
    grid: Grid | None = None,
) -> BandStats:
    """Write ``source`` to a Zarr array at URL ``dest``; return its band statistics (with what ``want`` asks).

    With a ``grid``, ``source`` (a stored level) is copied onto it, only its ``chunks`` (of those, only their
    ``parts``), the statistics from its foreground. With a ``ledger``, chunks already marked done are not copied
    again (their sample is read back from ``dest``), so an interrupted ingest resumes where it stopped.
    """
    grid = grid or Grid(source.shape, source.dtype)
    url = location(dest).url
    done = ledger.done_regions() if ledger is not None else set()  # one listing
    if not done or not location(url).child("zarr.json").exists():
        if ledger is not None:
            ledger.reset()
        _create_input_array(source, url, chunk, grid)
        done = set()
    _, rows, cols = grid.shape
    stride = sample_stride(rows, cols)
    copy = delayed(ingest_chunk, pure=False)
    reread = delayed(sample_chunk, pure=True)
    copied = open_copy(source, url, grid)
    regions = [r for r in chunk_grid(rows, cols, chunk) if grid.chunks is None or r in grid.chunks]
    parts = [grid.part(r) for r in regions]
    tasks = [
        reread(copied, p, stride) if (r.y0, r.x0) in done else copy(source, url, r, stride, ledger, grid.factor, p)
        for r, p in zip(regions, parts, strict=True)
    ]
    samples = executor(tasks, "ingest")
    if not samples:  # nothing to compute: statistics of the array's fill value
        samples = [np.zeros((grid.shape[0], 1))]
        parts = [Region(0, 1, 0, 1)]
    return BandStats.from_samples(_foreground_samples(samples, parts, stride, grid), want)


def _foreground_samples(samples: list[np.ndarray], regions: list[Region], stride: int, grid: Grid) -> np.ndarray:
    """The samples put together, pixels outside the foreground left out (NaN); all of them if none is inside."""
    whole = np.concatenate(samples, axis=1)
    if grid.sample_mask is None:
        return whole
    kept = []
    for sample, region in zip(samples, regions, strict=True):
        keep = grid.sample_mask(region, stride)
        values = sample.astype(np.float64)
        kept.append(values if keep is None else np.where(keep.reshape(1, -1), values, np.nan))
    inside = np.concatenate(kept, axis=1)
    return whole if np.isnan(inside).all() else inside


def _create_input_array(source: ImageSource, dest: str, chunk: int, grid: Grid) -> None:
    _, rows, cols = grid.shape
    create_array(
        dest,
        shape=grid.shape,
        chunks=(grid.shape[0], min(chunk, rows), min(chunk, cols)),
        dtype=grid.dtype,
        overwrite=True,
        dimension_names=("c", "y", "x"),
        attributes={"segpipe": {"source": source.path, "stored_axes": source.stored_axes}},
    )


def open_copy(source: ImageSource, dest: Where, grid: Grid | None = None) -> ImageSource:
    """The ingested (C, Y, X) Zarr copy of ``source`` (on ``grid``) at URL ``dest`` (no validation read)."""
    shape, dtype = (grid.shape, grid.dtype) if grid is not None else (source.shape, source.dtype)
    return ImageSource(location(dest).url, "zarr", "CYX", shape, dtype, zarr_format=OWN_FORMAT)


def measure(
    source: ImageSource, chunk: int, executor: Executor = local_executor, want: StatsRequest | None = None
) -> BandStats:
    """Band statistics (with what ``want`` asks) of an image used in place, reading a strided sample of each chunk."""
    stride = sample_stride(source.height, source.width)
    task = delayed(sample_chunk, pure=True)
    samples = executor([task(source, r, stride) for r in chunk_grid(source.height, source.width, chunk)], "measure")
    return BandStats.from_samples(np.concatenate(samples, axis=1), want)
