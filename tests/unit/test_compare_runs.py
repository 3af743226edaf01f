"""Runs side by side (segpipe/runs/compare.py): the best value of each row marked, missing values as ``-``."""

from __future__ import annotations

import math

from segpipe.runs import compare_runs


def runs() -> list[dict]:
    return [
        {
            "run_id": "0123456789abcdef",
            "name": "baseline",
            "params": {"model": "builtin"},
            "metrics": {
                "mean_iou": 0.90,
                "mean_dice": 0.95,
                "dice_background": 0.99,
                "dice_nucleus": 0.91,
                "megapixels_per_second": 0.78,
            },
        },
        {
            "run_id": "fedcba9876543210",
            "name": "bigger",
            "params": {"model": "unet_big.pt"},
            "metrics": {
                "mean_iou": 0.92,
                "mean_dice": 0.95,
                "dice_background": 0.98,
                "dice_nucleus": 0.93,
                "megapixels_per_second": 0.31,
            },
        },
        {"run_id": "aaaa", "name": "", "params": {}, "metrics": {"mean_iou": math.nan, "dice_nucleus": 0.5}},
    ]


def test_compare_runs_marks_the_best_per_row() -> None:
    table = compare_runs(runs())
    lines = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert table.splitlines()[0].split() == ["baseline", "bigger", "aaaa"]  # a run without a name: its id
    assert lines["model"][1:] == ["builtin", "unet_big.pt", "-"]
    assert lines["mean_iou"][1:] == ["0.9000", "0.9200*", "-"]
    assert lines["mean_dice"][1:] == ["0.9500*", "0.9500*", "-"]  # ties: both marked
    assert lines["dice_background"][1:] == ["0.9900*", "0.9800", "-"]
    assert lines["dice_nucleus"][1:] == ["0.9100", "0.9300*", "0.5000"]
    assert lines["megapixels_per_second"][1:] == ["0.78*", "0.31", "-"]
    assert "*" not in compare_runs(runs()[:1])  # nothing to compare against
    assert compare_runs([]) == "no runs to compare"
