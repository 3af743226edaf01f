"""Test-time augmentation: Dice and infer-stage wall time with ``tta`` none / flips / d4; writes JSON.

    python bench/tta.py [--repeats 2] [--chunk 512] [--out bench/results/tta.json]

Images: the real DSB 2018 nuclei sample (stardist 0.9.2's wheel, its instance mask as foreground truth) mirrored
into a (512 * repeats)^2 mosaic, and the synthetic demo sample of the same size; the built-in U-Net. Each mode
runs the whole batch flow into its own output folder, after one unmeasured warm-up run; ``cost`` is the mode's
infer-stage seconds over ``none``'s.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from common import write_result  # bench/common.py, beside this script

from flows.segment_batch import segment_batch
from segpipe.synthetic import write_sample
from tests.data.dsb import write_nuclei_mosaic

MODES = ("none", "flips", "d4")


def run(images: list[tuple[str, str]], chunk: int, workdir: Path, batch_size: int | str) -> dict[str, Any]:
    """Per mode and image: mean Dice, foreground Dice and infer seconds; then each mode's cost against none."""
    results: dict[str, Any] = {}
    warm = {"out": str(workdir / "warm-up"), "tiling": {"chunk": chunk}}  # model load and first passes, unmeasured
    segment_batch([images[0][0]], [images[0][1]], warm, workers=1)
    for mode in MODES:
        for image, truth in images:
            settings = {
                "out": str(workdir / mode),
                "tiling": {"chunk": chunk},
                "inference": {"tta": mode, "batch_size": batch_size},
            }
            entry = segment_batch([image], [truth], settings, workers=1).to_json()["images"][0]
            results.setdefault(mode, {})[Path(image).stem] = {
                "mean_dice": entry["mean_dice"],
                "foreground_dice": entry["dice"][1],
                "seconds_infer": entry["seconds"]["infer"],
            }
    for mode in MODES:
        for name, entry in results[mode].items():
            base = results["none"][name]
            entry["cost"] = entry["seconds_infer"] / base["seconds_infer"]
            entry["foreground_dice_gain"] = entry["foreground_dice"] - base["foreground_dice"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--batch-size", default="auto")
    parser.add_argument("--cache", default=".cache/test-data")
    parser.add_argument("--out", default="bench/results/tta.json")
    args = parser.parse_args()
    batch_size = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mosaic, mosaic_truth = write_nuclei_mosaic(args.cache, work / "data", args.repeats)
        sample, sample_truth = write_sample(work / "data", 512 * args.repeats, seed=0)
        images = [(str(mosaic), str(mosaic_truth)), (str(sample), str(sample_truth))]
        result = {
            "benchmark": "tta",
            "model": "builtin",
            "chunk": args.chunk,
            "batch_size": batch_size,
            "size": 512 * args.repeats,
            "modes": run(images, args.chunk, work, batch_size),
        }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
