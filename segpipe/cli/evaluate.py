"""``segpipe eval``: IoU and Dice of a predicted label image against truth, read chunk by chunk."""

from __future__ import annotations

import argparse
import json
from typing import Any

from segpipe.cli.output import print_scores
from segpipe.cli.settings import read_mapping
from segpipe.config import EvalConfig, TilingConfig


def evaluate_command(args: argparse.Namespace) -> int:
    """``segpipe eval PRED TRUTH``: print the scores (or one JSON object)."""
    from segpipe.io.images import open_image
    from segpipe.io.labels import resolve_label_image
    from segpipe.metrics import scores
    from segpipe.scoring import evaluate

    TilingConfig(chunk=args.chunk)
    labels = resolve_label_image(args.prediction)
    prediction, truth = open_image(labels.path), open_image(args.truth)
    if (prediction.height, prediction.width) != (truth.height, truth.width):
        from segpipe.errors import InputError

        raise InputError(
            f"{args.truth}: truth is {truth.height} x {truth.width} but prediction "
            f"{args.prediction} is {prediction.height} x {prediction.width}"
        )
    config = EvalConfig(args.ignore_index, args.truth_instances, read_mapping(args.truth_mapping))
    classes = args.num_classes or _largest_label(prediction, truth, args.chunk, config) + 1
    result = scores(evaluate(prediction, truth, max(classes, 2), config, args.chunk))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print_scores("eval", result, labels.names_for(len(result.iou)))
    return 0


def _largest_label(prediction: Any, truth: Any, chunk: int, config: EvalConfig) -> int:
    """The largest class id in the prediction and the (mapped) truth, read chunk by chunk."""
    from segpipe.scoring import truth_classes
    from segpipe.tiling import chunk_grid

    largest = 0
    for region in chunk_grid(prediction.height, prediction.width, chunk):
        largest = max(largest, int(prediction.read(*region).max()))
        labels = truth.read(*region)[0]
        if config.ignore_index is not None:
            labels = labels[labels != config.ignore_index]
        classes = truth_classes(labels, config)
        largest = max(largest, int(classes.max()) if classes.size else 0)
    return largest
