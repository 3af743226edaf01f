"""docs/benchmarks.md is rendered from a benchmark summary (bench/docs.py), and the committed page equals what
its committed summary renders to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.docs import load_summary, main, render

REPO = Path(__file__).resolve().parents[2]
SAMPLE = Path(__file__).with_name("bench_summary_sample.json")


def _rows(page: str, title: str) -> list[list[str]]:
    """The body rows of the table under ``## title``, as lists of cells."""
    section = page.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def test_every_goal_has_a_row_with_its_ratio_and_status() -> None:
    summary = load_summary(SAMPLE)
    rows = _rows(render(summary), "Goals")
    assert [(row[0], row[1]) for row in rows] == [(g["benchmark"], g["name"]) for g in summary["goals"]]
    assert [row[2] for row in rows] == ["0.62", "6.5", "0.3", "n/a"]
    assert [row[3] for row in rows] == [">= 0.8", "< 8", "< 1", "< 1"]
    assert [row[4] for row in rows] == ["miss", "pass", "pass", "n/a"]


def test_a_goals_note_is_shown() -> None:
    rows = _rows(render(load_summary(SAMPLE)), "Goals")
    assert rows[0][5] == "checked at 1024^2; the issue sets it at 8192^2"


def test_ratios_that_are_not_goals_are_listed_once() -> None:
    rows = _rows(render(load_summary(SAMPLE)), "Other figures")
    assert rows == [
        ["end_to_end", "floor/infer stage 1024^2", "0.71"],
        ["overhead", "seconds --help", "0.07"],
    ]


def test_a_failed_benchmark_is_listed() -> None:
    rows = _rows(render(load_summary(SAMPLE)), "Benchmarks that failed")
    assert rows == [["monai", "BenchError: exit 1"]]


def test_the_run_is_described() -> None:
    page = render(load_summary(SAMPLE))
    assert "- Command: `python -m bench --quick`" in page
    assert "- Machine: cpus 4, cpu_model Test CPU, memory_gib 16.0, gpu none, torch 2.9.0" in page


def test_main_writes_the_page_and_a_copy_of_its_summary(tmp_path: Path) -> None:
    page, copy = tmp_path / "benchmarks.md", tmp_path / "benchmarks.json"
    assert main(["--summary", str(SAMPLE), "--out", str(page), "--json", str(copy)]) == 0
    assert json.loads(copy.read_text()) == load_summary(SAMPLE)
    assert page.read_text() == render(load_summary(SAMPLE), source=str(copy))


def test_main_without_a_summary_says_what_to_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--summary", str(tmp_path / "missing.json"), "--out", str(tmp_path / "page.md")]) == 2
    assert "python -m bench" in capsys.readouterr().err


def test_committed_page_equals_its_rendered_summary() -> None:
    summary = load_summary(REPO / "docs" / "benchmarks.json")
    assert (REPO / "docs" / "benchmarks.md").read_text() == render(summary)
