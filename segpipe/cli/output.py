"""What the commands print: per-image and batch score tables, progress lines, segpipe's own warnings."""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING, Any

from segpipe.errors import SegpipeWarning

if TYPE_CHECKING:
    from segpipe.metrics import Scores
    from segpipe.stages.results import BatchResult

_WARNED: set[str] = set()


def show_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    """Print segpipe's own warnings once each."""
    if issubclass(category, SegpipeWarning) and str(message) not in _WARNED:
        _WARNED.add(str(message))
        print(f"segpipe: warning: {message}", file=sys.stderr)


def log(args: argparse.Namespace, message: str) -> None:
    """A progress line on stderr, unless the command prints JSON."""
    if not args.json:
        print(f"segpipe: {message}", file=sys.stderr)


def print_table(result: BatchResult, wall_seconds: float) -> None:
    """The batch as a table: each image's mask and scores, the batch's scores, where the run was logged."""
    from segpipe.stages.report import ImageReport

    names = list(result.batch.class_names)
    blocks = []
    for image in result.images:
        if not isinstance(image, ImageReport):
            blocks.append([f"{image.image}  FAILED: {image.error}"])
            continue
        lines = [f"{image.image}  ({image.megapixels:.1f} Mpx, {_throughput(image.megapixels_per_second)})"]
        lines.append(f"  mask: {image.mask}" + ("  (finished earlier: skipped)" if image.skipped else ""))
        if image.evaluation is not None:
            lines += score_lines(image.evaluation.scores, names)
        blocks.append(lines)
    if result.batch.scores is not None:
        blocks.append(["batch (all pixels)", *score_lines(result.batch.scores.aggregates.micro, names)])
    blocks.append(
        [
            f"MLflow run: {result.mlflow_run_id}  ({result.tracking_uri})",
            f"outputs:    {result.out}   wall time {wall_seconds:.1f} s",
        ]
    )
    print("\n\n".join("\n".join(block) for block in blocks))


def _throughput(rate: float | None) -> str:
    return "nothing computed" if rate is None else f"{rate:.2f} Mpx/s"


def score_lines(scores: Scores, names: list[str]) -> list[str]:
    """IoU and Dice per class and their means, one line each."""
    lines = [f"  {'class':<14}{'IoU':>8}{'Dice':>8}"]
    for name, iou, dice in zip(names, scores.iou, scores.dice, strict=True):
        lines.append(f"  {name:<14}{_fmt(iou):>8}{_fmt(dice):>8}")
    lines.append(f"  {'mean':<14}{_fmt(scores.mean_iou):>8}{_fmt(scores.mean_dice):>8}")
    return lines


def print_scores(title: str, scores: Scores, names: list[str]) -> None:
    """``title`` and the score lines."""
    print("\n".join([title, *score_lines(scores, names)]))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"
