"""Which tile size, batch and memory layout spend the model's time on pixels: kept megapixels per second of the
built-in U-Net, run the way a local cluster runs it (one stream of forward passes per core, one torch thread
each), for tiles with the model's default halo; writes JSON.

    python bench/tile_sizes.py [--repeat 3] [--seconds 2] [--out bench/results/tile_sizes.json]

Every forward pass computes (t + 2h)^2 pixels to keep t^2: ``redundant`` is (t + 2h)^2 / t^2 - 1. Larger tiles
waste less on the halo but run slower per pixel once a pass's activations outgrow the CPU's caches, so the best
tile is measured, not derived. Each configuration runs ``--repeat`` times, interleaved with the others (a busy
machine slows them alike), and its best rate counts.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np
import torch
from common import write_result  # bench/common.py, beside this script

from segpipe.models import resolve_model
from segpipe.models.cache import build_model, model_payload
from segpipe.models.predictor import Predictor
from segpipe.tiling import round_up

TILES = (192, 256, 320, 384, 512)
BATCHES = (1, 2)
OLD_DEFAULT = (512, 2, False)  # (tile, batch, channels_last) before this measurement


def kept_rate(predictor: Predictor, tile: int, window: int, batch: int, streams: int, seconds: float) -> float:
    """Kept (tile^2) megapixels per second of ``streams`` threads each running forward passes of ``batch``
    windows for ``seconds``."""
    inputs = np.random.default_rng(0).random((batch, 1, window, window), dtype=np.float32)
    predictor(inputs)  # warm-up: oneDNN picks its kernels for this shape
    passes = [0] * streams
    stop = time.perf_counter() + seconds

    def stream(index: int) -> None:
        while time.perf_counter() < stop:
            predictor(inputs)
            passes[index] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=stream, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(passes) * batch * tile * tile / 1e6 / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--out", default="bench/results/tile_sizes.json")
    args = parser.parse_args()
    streams = os.cpu_count() or 1
    torch.set_num_threads(1)  # what a local cluster gives each of its one-per-core workers
    ref = resolve_model("builtin")
    cpu = torch.device("cpu")
    layouts = {
        nhwc: Predictor(build_model(ref, model_payload(ref), cpu), ref.card, cpu, channels_last=nhwc)
        for nhwc in (True, False)
    }
    halo = ref.card.default_halo
    configs = [(tile, batch, True) for tile in TILES for batch in BATCHES] + [(512, 1, False), OLD_DEFAULT]
    best = dict.fromkeys(configs, 0.0)
    for _ in range(args.repeat):
        for tile, batch, nhwc in configs:
            window = round_up(tile + 2 * halo, ref.card.size_divisor)
            rate = kept_rate(layouts[nhwc], tile, window, batch, streams, args.seconds)
            best[(tile, batch, nhwc)] = max(best[(tile, batch, nhwc)], rate)
    reference = best[OLD_DEFAULT]
    runs = [
        {
            "tile": tile,
            "batch_size": batch,
            "halo": halo,
            "layout": "channels_last" if nhwc else "contiguous",
            "redundant": round_up(tile + 2 * halo, ref.card.size_divisor) ** 2 / tile**2 - 1,
            "kept_megapixels_per_second": rate,
            "ratio_to_old_default": rate / reference,
        }
        for (tile, batch, nhwc), rate in best.items()
    ]
    fastest = max(runs, key=lambda run: run["kept_megapixels_per_second"])
    summary = {"streams": streams, "torch_threads_per_stream": 1, "old_default": "tile 512, batch 2, contiguous"}
    result = {"benchmark": "tile_sizes", "repeat": args.repeat, **summary, "fastest": fastest, "runs": runs}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
