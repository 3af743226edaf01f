"""Style rules for the tests themselves: one assertion says one thing."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent
ROOT = TESTS.parent

# issue 17: split after the merge (files other helpers were rewriting when the chained asserts were split)
CHAINED_ASSERTS_ALLOWED = frozenset(
    {
        "tests/integration/test_cli_demo.py",
        "tests/integration/test_mlflow_server.py",
        "tests/integration/test_nightly.py",
        "tests/integration/test_prefect_deployment.py",
        "tests/integration/test_results_table.py",
        "tests/integration/test_segment_batch_flow.py",
        "tests/unit/models/test_auto_batch.py",
        "tests/unit/models/test_backends.py",
        "tests/unit/models/test_baseline.py",
        "tests/unit/models/test_cache.py",
        "tests/unit/models/test_card.py",
        "tests/unit/models/test_layout.py",
        "tests/unit/models/test_mlflow_registry.py",
        "tests/unit/models/test_onnx.py",
        "tests/unit/models/test_precision.py",
        "tests/unit/models/test_resolve.py",
        "tests/unit/models/test_unet.py",
        "tests/unit/stages/test_plan.py",
        "tests/unit/storage/test_location.py",
        "tests/unit/storage/test_options.py",
        "tests/unit/test_cli.py",
        "tests/unit/test_cli_models.py",
        "tests/unit/test_evaluation.py",
        "tests/unit/test_metrics.py",
        "tests/unit/test_objects.py",
        "tests/unit/test_reports.py",
        "tests/unit/test_runs.py",
        "tests/unit/test_tracking.py",
    }
)


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
