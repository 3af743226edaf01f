"""Ingest: copy an image, one chunk per task, into a Zarr v3 (C, Y, X) array on the chunk grid.

A strided pixel sample for normalization is collected on the way. Peak memory is one chunk per worker, whatever
the size. Source and destination are URLs on any store (``segpipe.storage``).
"""

from __future__ import annotations

import os

import numpy as np
from dask.delayed import delayed

from segpipe.executor import Executor, local_executor
from segpipe.io.images import ImageSource
from segpipe.io.ledger import ChunkLedger
from segpipe.normalize import BandStats, StatsRequest, sample_stride
from segpipe.storage import OWN_FORMAT, Location, create_array, location, open_array
from segpipe.tiling import Region, chunk_grid, strided_sample

Where = str | os.PathLike[str] | Location


def ingest_chunk(
    source: ImageSource, dest: str, region: Region, stride: int, ledger: ChunkLedger | None = None
) -> np.ndarray:
    """Copy one chunk into the array at URL ``dest``, mark it done; return its strided (C, n) sample."""
    data = source.read(*region)
    if ledger is not None:
        ledger.check_fence()
    open_array(dest, mode="r+", zarr_format=OWN_FORMAT)[:, region.y0 : region.y1, region.x0 : region.x1] = data
    if ledger is not None:
        ledger.mark_done(region)
    return strided_sample(data, region, stride).reshape(data.shape[0], -1)


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
) -> BandStats:
    """Write ``source`` to a Zarr array at URL ``dest``; return its band statistics (with what ``want`` asks).

    With a ``ledger``, chunks already marked done are not copied again (their sample is read back from
    ``dest``), so an interrupted ingest resumes where it stopped.
    """
    url = location(dest).url
    done = ledger.done_regions() if ledger is not None else set()  # one listing
    if not done or not location(url).child("zarr.json").exists():
        if ledger is not None:
            ledger.reset()
        _create_input_array(source, url, chunk)
        done = set()
    stride = sample_stride(source.height, source.width)
    copy = delayed(ingest_chunk, pure=False)
    reread = delayed(sample_chunk, pure=True)
    copied = open_copy(source, url)
    tasks = [
        reread(copied, r, stride) if (r.y0, r.x0) in done else copy(source, url, r, stride, ledger)
        for r in chunk_grid(source.height, source.width, chunk)
    ]
    samples = executor(tasks, "ingest")
    return BandStats.from_samples(np.concatenate(samples, axis=1), want)


def _create_input_array(source: ImageSource, dest: str, chunk: int) -> None:
    create_array(
        dest,
        shape=source.shape,
        chunks=(source.channels, min(chunk, source.height), min(chunk, source.width)),
        dtype=source.dtype,
        overwrite=True,
        dimension_names=("c", "y", "x"),
        attributes={"segpipe": {"source": source.path, "stored_axes": source.stored_axes}},
    )


def open_copy(source: ImageSource, dest: Where) -> ImageSource:
    """The ingested (C, Y, X) Zarr copy of ``source`` at URL ``dest`` as an ImageSource (no validation read)."""
    return ImageSource(location(dest).url, "zarr", "CYX", source.shape, source.dtype, zarr_format=OWN_FORMAT)


def measure(
    source: ImageSource, chunk: int, executor: Executor = local_executor, want: StatsRequest | None = None
) -> BandStats:
    """Band statistics (with what ``want`` asks) of an image used in place, reading a strided sample of each chunk."""
    stride = sample_stride(source.height, source.width)
    task = delayed(sample_chunk, pure=True)
    samples = executor([task(source, r, stride) for r in chunk_grid(source.height, source.width, chunk)], "measure")
    return BandStats.from_samples(np.concatenate(samples, axis=1), want)
