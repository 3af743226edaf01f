"""Runs side by side.

``compare_runs`` prints the runs ``segpipe.tracking.fetch_runs`` gives as one plain-text table, the best value of each
row marked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from segpipe.metrics import defined


def compare_runs(runs: Sequence[dict[str, Any]]) -> str:
    """A plain-text table, one column per run ({run_id, name, params, metrics}).

    Rows: model, mean_iou, mean_dice, each ``dice_<class>``, megapixels_per_second. ``*`` marks the best (highest) value
    of a row when two or more runs have one; a missing or NaN value shows as ``-``.
    """
    if not runs:
        return "no runs to compare"
    run_ids = [str(r.get("run_id") or "") for r in runs]
    headers = [str(r.get("name") or run_ids[i][:8] or f"run {i + 1}") for i, r in enumerate(runs)]
    models = [str((r.get("params") or {}).get("model", "-")) for r in runs]
    table = [
        ["", *[f"{h} " for h in headers]],
        ["run_id", *[f"{i[:12] or '-'} " for i in run_ids]],
        ["model", *[f"{m} " for m in models]],
    ]
    logged = [r.get("metrics") or {} for r in runs]
    dice_keys = dict.fromkeys(k for m in logged for k in sorted(m) if k.startswith("dice_"))
    for key in ("mean_iou", "mean_dice", *dice_keys, "megapixels_per_second"):
        digits = 2 if key == "megapixels_per_second" else 4
        table.append([key, *_marked([m.get(key) for m in logged], digits)])
    return _align(table)


def _align(table: list[list[str]]) -> str:
    """First column left-aligned, the others right-aligned, trailing blanks stripped."""
    widths = [max(len(row[c]) for row in table) for c in range(len(table[0]))]
    lines = []
    for row in table:
        rest = (cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        cells = [row[0].ljust(widths[0]), *rest]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _marked(values: list[Any], digits: int) -> list[str]:
    numbers = [defined(v) for v in values]
    present = [v for v in numbers if v is not None]
    best = max(present) if len(present) >= 2 else None
    return [_number(v, digits) + ("*" if best is not None and v == best else " ") for v in numbers]


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"
