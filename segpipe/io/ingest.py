"""Ingest: copy an image, one chunk per task, into a Zarr v3 (C, Y, X) array on the chunk grid, collecting a
strided pixel sample for normalization on the way. Peak memory is one chunk per worker, whatever the size."""

from __future__ import annotations

import dask
import numpy as np
import zarr

from segpipe.inference import Executor, local_executor
from segpipe.io.images import ImageSource
from segpipe.normalize import BandStats, sample_stride
from segpipe.tiling import Region, chunk_grid, strided_sample


def ingest_chunk(source: ImageSource, dest: str, region: Region, stride: int) -> np.ndarray:
    """Copy one chunk into ``dest``; return its strided (C, n) sample."""
    data = source.read(*region)
    zarr.open_array(dest, mode="r+")[:, region.y0 : region.y1, region.x0 : region.x1] = data
    return strided_sample(data, region, stride).reshape(data.shape[0], -1)


def sample_chunk(source: ImageSource, region: Region, stride: int) -> np.ndarray:
    """The strided (C, n) sample of one chunk, read without copying."""
    data = source.read(*region)
    return strided_sample(data, region, stride).reshape(data.shape[0], -1)


def ingest(source: ImageSource, dest: str, chunk: int, executor: Executor = local_executor) -> BandStats:
    """Write ``source`` to a new Zarr array at ``dest``; return its band statistics."""
    zarr.create_array(
        dest,
        shape=source.shape,
        chunks=(source.channels, min(chunk, source.height), min(chunk, source.width)),
        dtype=source.dtype,
        overwrite=True,
        dimension_names=("c", "y", "x"),
        attributes={"segpipe": {"source": source.path, "stored_axes": source.stored_axes}},
    )
    stride = sample_stride(source.height, source.width)
    task = dask.delayed(ingest_chunk, pure=False)
    samples = executor([task(source, dest, r, stride) for r in chunk_grid(source.height, source.width, chunk)],
                       "ingest")
    return BandStats.from_samples(np.concatenate(samples, axis=1))


def measure(source: ImageSource, chunk: int, executor: Executor = local_executor) -> BandStats:
    """Band statistics of an image used in place (a Zarr input), reading a strided sample of each chunk."""
    stride = sample_stride(source.height, source.width)
    task = dask.delayed(sample_chunk, pure=True)
    samples = executor([task(source, r, stride) for r in chunk_grid(source.height, source.width, chunk)],
                       "measure")
    return BandStats.from_samples(np.concatenate(samples, axis=1))
