"""overlap: what reading ahead and writing behind buy when the store answers slowly and the model is fast.

On a GPU the forward pass of a chunk takes milliseconds and an object store's answer tens of them; this CPU
machine cannot show that with the real U-Net, so the benchmark makes the same shape here: the near-free model
(a 1x1 convolution; storage sets the pace) and S3 from moto behind a proxy that holds each response back by
``LATENCY`` seconds (bench/latency_proxy.py; moto alone answers in about a millisecond on loopback).

The same chunks are predicted two ways, alternating, best of the profile's ``overlap_rounds``, on Dask's local
threads (one per core):
- ``one chunk per task``: each task reads its chunk, predicts it and writes it in turn (nothing to overlap);
- ``grouped``: the default, runs of chunks per task (``task_runs``: shrinking towards the end), each task reading
  the next chunk while the model runs and writing finished chunks behind.
The mask and ledger markers live on the same store; each run starts from an empty ledger. Ratio: grouped / one
chunk per task, seconds (below 1: the overlap pays). The same pair on local disk shows what it costs where
there is no latency to hide.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import tile_pool, write_pointwise_model
from bench.harness import Context, ratio
from bench.latency_proxy import LatencyProxy
from bench.s3_vs_local import BUCKET, moto_server, s3_client
from segpipe.chunk_inference import ChunkJob, ChunkOutputs, Windowing, create_mask, segment_image, task_runs
from segpipe.config import InferenceConfig
from segpipe.executor import local_executor, task_slots
from segpipe.io.images import open_image
from segpipe.io.ledger import ChunkLedger
from segpipe.models import resolve_model
from segpipe.storage import create_array
from segpipe.tiling import chunk_grid

NAME = "overlap"
LATENCY = 0.02  # seconds before an S3 response's first byte (a same-region object store: 10-30 ms)
CHUNKS_PER_SIDE = 8  # 64 chunks: enough for grouped tasks of several chunks on every core


def write_image(url: str, size: int) -> None:
    """A ``size``^2 uint16 Zarr array of nuclei tiles at ``url``, its chunks the run's chunks, written in rows."""
    chunk = size // CHUNKS_PER_SIDE
    pool = tile_pool(seed=0, tile=chunk, count=4)
    array = create_array(url, shape=(1, size, size), chunks=(1, chunk, chunk), dtype=np.uint16, overwrite=True)
    for row in range(CHUNKS_PER_SIDE):
        band = np.concatenate([pool[(row + col) % len(pool)] for col in range(CHUNKS_PER_SIDE)], axis=1)
        array[0, row * chunk : (row + 1) * chunk, :] = band


def predict_once(job: ChunkJob, per_task: int | None) -> float:
    """Seconds to predict every chunk of ``job`` from an empty ledger, ``per_task`` chunks per task (None: default)."""
    assert job.outputs.ledger is not None
    job.outputs.ledger.reset()
    create_mask(job.outputs.mask, job.source.height, job.source.width, job.windowing.chunk, 2)
    start = time.perf_counter()
    summary = segment_image(job, local_executor, per_task=per_task)
    seconds = time.perf_counter() - start
    chunks = len(chunk_grid(job.source.height, job.source.width, job.windowing.chunk))
    if summary.chunks_computed != chunks:
        raise RuntimeError(f"overlap: {summary.chunks_computed} of {chunks} chunks computed")
    return seconds


def compare(root: str, size: int, model: Path, rounds: int) -> dict[str, Any]:
    """Both ways on the store at ``root`` (a local folder or ``s3://`` URL): best seconds of each, and the sizes."""
    image = f"{root}/image.zarr"
    write_image(image, size)
    chunk = size // CHUNKS_PER_SIDE
    windowing = Windowing(chunk=chunk, tile=chunk // 2, halo=0)
    inference = InferenceConfig(batch_size="auto", device="cpu", torch_threads=1)
    outputs = ChunkOutputs(f"{root}/mask.zarr", None, ChunkLedger(root, "infer", "overlap"))
    job = ChunkJob(open_image(image), resolve_model(str(model)), windowing, inference, outputs)
    regions = chunk_grid(size, size, chunk)
    grouped = [len(run) for run in task_runs(regions, task_slots(local_executor, "infer"))]
    best: dict[int | None, float] = {1: float("inf"), None: float("inf")}
    for _ in range(rounds):
        for per_task in best:
            best[per_task] = min(best[per_task], predict_once(job, per_task))
    return {
        "chunk": chunk,
        "grouped_chunks_per_task": grouped,
        "seconds": {"one_per_task": best[1], "grouped": best[None]},
    }


@contextmanager
def environment(values: dict[str, str | None]) -> Iterator[None]:
    """``values`` in this process's environment (None unsets), restored afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    _set_environment(values)
    try:
        yield
    finally:
        _set_environment(saved)


def _set_environment(values: dict[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def run(ctx: Context) -> dict[str, Any]:
    size = ctx.profile.overlap
    model = write_pointwise_model(ctx.workdir / "models")
    ctx.log(f"overlap: {size}^2 in {CHUNKS_PER_SIDE**2} chunks on local disk, both ways")
    local = compare(str(ctx.workdir / "overlap-local"), size, model, ctx.profile.overlap_rounds)
    with moto_server() as (env, _):
        s3_client(env).create_bucket(Bucket=BUCKET)
        with LatencyProxy(str(env["AWS_ENDPOINT_URL"]), LATENCY) as slow_endpoint:
            ctx.log(f"overlap: the same on S3 answering after {LATENCY * 1000:.0f} ms ({slow_endpoint})")
            with environment({**env, "AWS_ENDPOINT_URL": slow_endpoint}):
                remote = compare(f"s3://{BUCKET}/overlap", size, model, ctx.profile.overlap_rounds)
    latency = f"{LATENCY * 1000:.0f} ms"
    return {
        "size": size,
        "latency_seconds": LATENCY,
        "rounds": ctx.profile.overlap_rounds,
        "model": "near-free (1x1 convolution)",
        "local": local,
        "s3": remote,
        "ratios": {
            f"grouped/one-per-task seconds, S3 +{latency}": ratio(
                remote["seconds"]["grouped"], remote["seconds"]["one_per_task"]
            ),
            "grouped/one-per-task seconds, local disk": ratio(
                local["seconds"]["grouped"], local["seconds"]["one_per_task"]
            ),
        },
        "goals": [],
    }
