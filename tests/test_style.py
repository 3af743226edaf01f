"""Style rules for the tests themselves: one assertion says one thing."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent
ROOT = TESTS.parent

CHAINED_ASSERTS_ALLOWED: frozenset[str] = frozenset()  # none left: every test asserts one thing at a time


def chained_asserts(path: Path) -> list[int]:
    """Line numbers of every ``assert a and b`` in ``path`` (a failure would not say which part broke)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Assert) and isinstance(node.test, ast.BoolOp) and isinstance(node.test.op, ast.And)
    ]


def test_no_chained_asserts_outside_the_allow_list() -> None:
    found = {
        name: lines
        for path in sorted(TESTS.rglob("*.py"))
        if (name := path.relative_to(ROOT).as_posix()) not in CHAINED_ASSERTS_ALLOWED
        and (lines := chained_asserts(path))
    }
    where = ", ".join(f"{name}:{line}" for name, lines in found.items() for line in lines)
    assert not found, f"split these into one assert per part: {where}"


def test_the_checker_finds_a_chained_assert_spanning_lines(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text("def test_x(a, b):\n    assert a == 1\n    assert (\n        a\n        and b\n    ), 'msg'\n")
    assert chained_asserts(sample) == [3]
