"""Goals from the performance issue, checked against what one run measured; and the table printed at the end."""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "<": operator.lt,
    ">": operator.gt,
}


@dataclass(frozen=True)
class Goal:
    """``measured OP target``, e.g. ``floor/command at 8192^2 >= 0.80``.

    Attributes:
        benchmark: the benchmark that measured it.
        name: what was measured, with its size.
        measured: the value (None when it could not be measured).
        op: one of ``COMPARE``.
        target: the goal.
        note: why the check is not the issue's exact one (``--quick`` sizes), or ''.
    """

    benchmark: str
    name: str
    measured: float | None
    op: str
    target: float
    note: str = ""

    @property
    def passed(self) -> bool | None:
        """Whether the goal is met; None when nothing was measured."""
        if self.measured is None:
            return None
        return COMPARE[self.op](self.measured, self.target)

    @property
    def status(self) -> str:
        return {True: "pass", False: "miss", None: "n/a"}[self.passed]

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "name": self.name,
            "measured": self.measured,
            "goal": f"{self.op} {self.target:g}",
            "op": self.op,
            "target": self.target,
            "status": self.status,
            "note": self.note,
        }


def size_note(measured_at: int, goal_at: int) -> str:
    """Say so when a goal set at ``goal_at``^2 is checked at another size."""
    return "" if measured_at == goal_at else f"checked at {measured_at}^2; the issue sets it at {goal_at}^2"


def table(summary: dict[str, Any]) -> str:
    """A short text table: every goal with its status, then every other ratio."""
    rows = [("benchmark", "measure", "value", "goal", "status")]
    for goal in summary["goals"]:
        status = goal["status"] + (" *" if goal["note"] else "")
        rows.append((goal["benchmark"], goal["name"], _fmt(goal["measured"]), goal["goal"], status))
    named = {(g["benchmark"], g["name"]) for g in summary["goals"]}
    for name, entry in summary["benchmarks"].items():
        if entry.get("error"):
            rows.append((name, "ERROR", "", "", entry["error"][:60]))
        for key, value in entry.get("ratios", {}).items():
            if (name, key) not in named:
                rows.append((name, key, _fmt(value), "", ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    if any(g["note"] for g in summary["goals"]):
        lines.append("* checked at another size than the issue's (--quick): see the note in summary.json")
    return "\n".join(line.rstrip() for line in lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def goal_list(goals: Iterable[Goal]) -> list[dict[str, Any]]:
    return [goal.to_json() for goal in goals]
