"""Both built-in models on the real DSB 2018 nuclei sample, through ``segpipe run``; prints one JSON object.

    python scripts/compare_builtin.py [--cache .cache/test-data] [--out /tmp/compare-builtin] [--tta none flips]

The sample is stardist 0.9.2's img2d.tif / mask2d.tif (tests/data/dsb.py: the registry wheel, fetched once).
Each model runs as a user runs it: ``python -m segpipe.cli run IMG --truth MASK --truth-instances --objects
--model M --tta T --json``, for each test-time augmentation mode T. Per run: object F1 at IoU 0.5 (the run's
object matching of ``labels/objects`` against the instance truth), the nucleus Dice the run reports (for
``builtin:boundary`` its boundary pixels count as nucleus, as the evaluate stage does for instance truth), and
the Dice of the union of the objects against the truth foreground, read from the written id image.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.data.dsb import dsb_nuclei  # noqa: E402  (the repository root, put on the path above)

MODELS = ("builtin", "builtin:boundary")


def run_model(model: str, tta: str, image: Path, truth: Path, out: Path) -> dict[str, Any]:
    """One ``segpipe run`` of ``model`` with test-time augmentation ``tta``; its figures on the image."""
    command = [sys.executable, "-m", "segpipe.cli", "run", str(image), "--truth", str(truth), "--truth-instances"]
    command += ["--objects", "--model", model, "--tta", tta, "--out", str(out), "--json", "--workers", "1"]
    command += ["--tracking-uri", f"sqlite:///{out / 'mlflow.db'}", "--overwrite"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ), check=False)
    if done.returncode != 0:
        raise SystemExit(f"{model}: segpipe run failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    (entry,) = json.loads(done.stdout)["images"]
    ids = np.asarray(zarr.open_array(os.path.join(entry["ome_zarr"], "labels", "objects", "0"), mode="r")[:])
    found, foreground = ids > 0, tifffile.imread(truth) > 0
    at_50 = entry["objects"][0]
    return {
        "object_f1_iou50": round(at_50["f1"], 4),
        "precision_iou50": round(at_50["precision"], 4),
        "recall_iou50": round(at_50["recall"], 4),
        "panoptic_quality_iou50": round(at_50["panoptic_quality"], 4),
        "objects": at_50["n_pred"],
        "true_objects": at_50["n_true"],
        "nucleus_dice": round(entry["dice"][1], 4),
        "objects_union_dice": round(float(2 * np.sum(found & foreground) / (found.sum() + foreground.sum())), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--cache", default=str(ROOT / ".cache" / "test-data"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/compare-builtin"))
    parser.add_argument("--tta", nargs="+", default=["none", "flips"], help="test-time augmentation modes to run")
    args = parser.parse_args()
    image, truth = dsb_nuclei(args.cache)
    result = {
        f"{m} --tta {tta}": run_model(m, tta, image, truth, args.out / f"{m.replace(':', '-')}-{tta}")
        for tta in args.tta
        for m in MODELS
    }
    print(json.dumps({"image": "stardist 0.9.2 img2d.tif (DSB 2018)", "runs": result}, indent=2))


if __name__ == "__main__":
    main()
