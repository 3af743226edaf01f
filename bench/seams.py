"""Seam diagnostic: Dice in a band along chunk borders vs the interior, for each stitch mode; writes JSON.

    python bench/seams.py [--repeats 4] [--chunk 256] [--out bench/results/seams.json]

Images: the real DSB 2018 nuclei sample (stardist 0.9.2's wheel) mirrored into a (512 * repeats)^2 mosaic, and
the synthetic demo sample of the same size. Modes: trim with the model's halo (exact), trim with halo 0 (a
control that must show seams), gaussian blending (overlap 0.5). A small chunk makes many borders.

The band and the interior are different pixels, so their Dice differ even without tiling. trim with the
model's halo equals whole-image inference exactly (tests/unit/test_inference.py), so each mode's
``seam_band_vs_untiled`` (its band Dice minus exact trim's band Dice) is what tiling itself costs in the band.
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

MODES: dict[str, dict[str, Any]] = {
    "trim_model_halo": {"stitch": "trim"},
    "trim_halo_0": {"stitch": "trim", "halo": 0},
    "gaussian": {"stitch": "gaussian", "overlap": 0.5, "tile": 128},
}


def run(images: list[tuple[str, str, bool]], chunk: int, workdir: Path) -> dict:
    results: dict = {}
    for mode, tiling in MODES.items():
        for image, truth, instances in images:
            settings = {
                "out": str(workdir / mode),
                "tiling": {"chunk": chunk, **tiling},
                "evaluation": {"truth_instances": instances},
            }
            entry = segment_batch([image], [truth], settings, workers=2).to_json()["images"][0]
            results.setdefault(mode, {})[Path(image).stem] = {
                "mean_dice": entry["mean_dice"],
                "interior_mean_dice": entry["interior"]["mean_dice"],
                "seam_band_mean_dice": entry["seam_band"]["mean_dice"],
                "seam_minus_interior": entry["seam_band"]["mean_dice"] - entry["interior"]["mean_dice"],
                "seam_band_pixels": entry["seam_band"]["pixels"],
                "seconds_infer": entry["seconds"]["infer"],
            }
    for mode in results:
        for image, entry in results[mode].items():
            untiled = results["trim_model_halo"][image]["seam_band_mean_dice"]
            entry["seam_band_vs_untiled"] = entry["seam_band_mean_dice"] - untiled
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--cache", default=".cache/test-data")
    parser.add_argument("--out", default="bench/results/seams.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mosaic, mosaic_truth = write_nuclei_mosaic(args.cache, work / "data", args.repeats)
        sample, sample_truth = write_sample(work / "data", 512 * args.repeats, seed=0)
        images = [(str(mosaic), str(mosaic_truth), False), (str(sample), str(sample_truth), False)]
        result = {
            "benchmark": "seams",
            "chunk": args.chunk,
            "seam_band_pixels_wide": 8,
            "size": 512 * args.repeats,
            "modes": run(images, args.chunk, work),
        }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
