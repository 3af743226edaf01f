"""segpipe's confusion matrix + scores against torchmetrics computing the same IoU and Dice; writes JSON.

    python bench/metrics_speed.py [--size 2048] [--images 8] [--classes 2 5] [--repeat 3]
                                  [--out bench/results/metrics_speed.json]

On the same seeded uint8 label images (prediction = truth with 10 % of pixels relabelled), per image:
segpipe: ``confusion_matrix`` + ``scores`` (IoU, Dice, precision, recall, means); torchmetrics:
``MulticlassJaccardIndex`` + ``MulticlassF1Score`` (``average=None``, CPU, called as modules with their
default ``validate_args=True``), and the functional forms with ``validate_args=False`` (its fastest path).
torchmetrics gets int64 tensors made before the clock starts. Each timing is the best of ``--repeat`` runs.
The goal is ratio >= 5. ``objects`` times ``object_metrics`` on a 4096 x 4096 instance image of ~20 k objects.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torchmetrics
from common import write_result  # bench/common.py, beside this script
from scipy import ndimage
from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex
from torchmetrics.functional.classification import multiclass_f1_score, multiclass_jaccard_index

from segpipe.metrics import confusion_matrix, scores
from segpipe.objects import label_objects, object_metrics

GOAL = 5.0


def label_images(count: int, size: int, classes: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(truth, prediction) uint8 pairs; the prediction relabels 10 % of the truth's pixels."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        truth = rng.integers(0, classes, (size, size), dtype=np.uint8)
        noise = rng.random((size, size)) < 0.1
        shift = rng.integers(1, classes, (size, size), dtype=np.uint8)
        pairs.append((truth, np.where(noise, (truth + shift) % classes, truth).astype(np.uint8)))
    return pairs


def best_of(repeat: int, run: Callable[[], Any]) -> tuple[float, Any]:
    """Fastest of ``repeat`` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def compare(pairs: list[tuple[np.ndarray, np.ndarray]], classes: int, repeat: int) -> dict[str, Any]:
    megapixels = sum(t.size for t, _ in pairs) / 1e6
    tensors = [(torch.from_numpy(t.astype(np.int64)), torch.from_numpy(p.astype(np.int64))) for t, p in pairs]

    def ours() -> list[tuple[list[float], list[float]]]:
        return [(s["iou"], s["dice"]) for s in (scores(confusion_matrix(t, p, classes)) for t, p in pairs)]

    def modules() -> list[tuple[list[float], list[float]]]:
        jaccard = MulticlassJaccardIndex(num_classes=classes, average=None)
        f1 = MulticlassF1Score(num_classes=classes, average=None)
        return [(jaccard(p, t).tolist(), f1(p, t).tolist()) for t, p in tensors]

    def functional() -> list[tuple[list[float], list[float]]]:
        options: dict[str, Any] = {"num_classes": classes, "average": None, "validate_args": False}
        return [
            (multiclass_jaccard_index(p, t, **options).tolist(), multiclass_f1_score(p, t, **options).tolist())
            for t, p in tensors
        ]

    seconds, mine = best_of(repeat, ours)
    seconds_modules, theirs = best_of(repeat, modules)
    seconds_functional, fast = best_of(repeat, functional)
    difference = max(float(np.max(np.abs(np.array(a) - np.array(b)))) for a, b in [(mine, theirs), (mine, fast)])
    return {
        "classes": classes,
        "megapixels": megapixels,
        "segpipe_seconds": seconds,
        "segpipe_megapixels_per_second": megapixels / seconds,
        "torchmetrics_seconds": seconds_modules,
        "torchmetrics_megapixels_per_second": megapixels / seconds_modules,
        "ratio": seconds_modules / seconds,
        "torchmetrics_functional_unvalidated_seconds": seconds_functional,
        "ratio_functional_unvalidated": seconds_functional / seconds,
        "max_abs_difference_iou_dice": difference,
    }


def instance_scene(size: int, seeds: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Truth: ``seeds`` touching blobs (radius ~7, each pixel owned by its nearest seed); prediction: the
    connected components of the truth's foreground shifted by one pixel (touching blobs merge)."""
    rng = np.random.default_rng(seed)
    ys, xs = rng.integers(0, size, (2, seeds))
    centres = np.ones((size, size), bool)
    centres[ys, xs] = False
    distance, (iy, ix) = ndimage.distance_transform_edt(centres, return_indices=True)
    ids = np.zeros((size, size), np.int32)
    ids[ys, xs] = np.arange(1, seeds + 1)
    truth = np.where(distance < 7, ids[iy, ix], 0).astype(np.int32)
    prediction, _ = label_objects(np.roll(truth > 0, 1, axis=0))
    return truth, prediction


def time_objects(size: int, seeds: int, repeat: int) -> dict[str, Any]:
    truth, prediction = instance_scene(size, seeds)
    seconds, rows = best_of(repeat, lambda: object_metrics(truth, prediction))
    label_seconds, _ = best_of(repeat, lambda: label_objects(np.roll(truth > 0, 1, axis=0)))
    first = rows[0]
    return {
        "size": size,
        "true_objects": first["n_true"],
        "predicted_objects": first["n_pred"],
        "thresholds": len(rows),
        "object_metrics_seconds": seconds,
        "label_objects_seconds": label_seconds,
        "f1_at_0.5": first["f1"],
        "f1_at_0.9": rows[-1]["f1"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--classes", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--object-size", type=int, default=4096, help="0 skips the object benchmark")
    parser.add_argument("--objects", type=int, default=22_000, help="blob seeds in the object benchmark")
    parser.add_argument("--out", default="bench/results/metrics_speed.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # torchmetrics warns about absent classes
    cases = [compare(label_images(args.images, args.size, k), k, args.repeat) for k in args.classes]
    result = {
        "benchmark": "metrics_speed",
        "images": args.images,
        "image_size": args.size,
        "cases": cases,
        "goal_ratio": GOAL,
        "meets_goal": all(c["ratio"] >= GOAL for c in cases),
        "objects": time_objects(args.object_size, args.objects, args.repeat) if args.object_size else None,
        "torchmetrics": torchmetrics.__version__,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
