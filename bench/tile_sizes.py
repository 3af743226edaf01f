"""Which tile size spends the model's time on pixels: kept megapixels per second of the built-in U-Net for tile
sizes with the same halo, the batch sized so each forward pass holds about as many pixels; writes JSON.

    python bench/tile_sizes.py [--halo 32] [--repeat 4] [--out bench/results/tile_sizes.json]

Each configuration runs ``--repeat`` times, interleaved with the others (a busy machine slows them alike), and
its best rate counts. ``redundant`` is the halo's extra work, (t + 2h)^2 / t^2 - 1.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from common import write_result  # bench/common.py, beside this script

from segpipe.models import load_predictor, resolve_model

CONFIGS = ((256, 8), (512, 2), (512, 4), (1024, 1))  # (tile, batch): the pipeline's old and new defaults first


def kept_rate(predictor: object, tile: int, halo: int, batch: int) -> float:
    """Kept (tile) megapixels per second of one forward pass over ``batch`` windows of tile + 2 halo."""
    window = tile + 2 * halo
    inputs = np.random.default_rng(0).random((batch, 1, window, window), dtype=np.float32)
    start = time.perf_counter()
    predictor(inputs)  # type: ignore[operator]
    return batch * tile * tile / 1e6 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--halo", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--out", default="bench/results/tile_sizes.json")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    predictor = load_predictor(resolve_model("builtin"), "cpu")
    for tile, batch in CONFIGS:  # warm-up
        kept_rate(predictor, tile, args.halo, batch)
    best = {config: 0.0 for config in CONFIGS}
    for _ in range(args.repeat):
        for tile, batch in CONFIGS:
            best[(tile, batch)] = max(best[(tile, batch)], kept_rate(predictor, tile, args.halo, batch))
    reference = best[CONFIGS[0]]
    runs = [
        {
            "tile": tile,
            "batch_size": batch,
            "halo": args.halo,
            "redundant": (tile + 2 * args.halo) ** 2 / tile**2 - 1,
            "kept_megapixels_per_second": rate,
            "ratio_to_tile_256_batch_8": rate / reference,
        }
        for (tile, batch), rate in best.items()
    ]
    write_result(args.out, {"benchmark": "tile_sizes", "repeat": args.repeat, "runs": runs})


if __name__ == "__main__":
    main()
