"""End-to-end throughput vs the model's raw forward throughput, measured in one run; writes JSON.

    python bench/throughput.py [--size 4096] [--out bench/results/throughput.json]

raw: the model alone, in this process with every core, on batches of (tile + 2 halo)^2 windows, counting only
the tile's own pixels (the halo is work the pipeline cannot avoid). end_to_end: the Prefect flow's inference
stage (read chunk + halo from Zarr, normalize, batch, forward, trim, write) on a LocalCluster, image pixels per
second. The goal (see README) is ratio >= 0.90.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import write_result  # bench/common.py, beside this script

from segpipe.models.loader import load_predictor, resolve_model


def raw_forward(tile: int, halo: int, batch_size: int, seconds: float = 10.0) -> float:
    """Owned megapixels per second of the bare model forward pass."""
    ref = resolve_model("builtin")
    predictor = load_predictor(ref, "cpu", os.cpu_count())
    edge = tile + 2 * halo
    batch = np.random.default_rng(0).random((batch_size, 1, edge, edge), dtype=np.float32)
    predictor(batch)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        predictor(batch)
        done += 1
    return done * batch_size * tile * tile / 1e6 / (time.perf_counter() - start)


def end_to_end(size: int, workdir: Path, batch_size: int) -> dict[str, float]:
    from flows.segment_batch import segment_batch
    from segpipe.synthetic import write_sample

    image, truth = write_sample(workdir / "sample", size)
    settings = {"out": str(workdir / "out"), "inference": {"batch_size": batch_size}}
    report = segment_batch([str(image)], [str(truth)], settings)
    entry = report["images"][0]
    return {
        "infer_megapixels_per_second": entry["megapixels_per_second"],
        "flow_megapixels_per_second": report["batch"]["megapixels_per_second"],
        "seconds": entry["seconds"],
        "mean_dice": entry["mean_dice"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="bench/results/throughput.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = end_to_end(args.size, Path(tmp), args.batch_size)
    raw = raw_forward(tile=256, halo=32, batch_size=args.batch_size)
    result = {
        "benchmark": "throughput",
        "image_size": args.size,
        "raw_forward_megapixels_per_second": raw,
        **pipeline,
        "ratio_infer_to_raw": pipeline["infer_megapixels_per_second"] / raw,
        "ratio_flow_to_raw": pipeline["flow_megapixels_per_second"] / raw,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
