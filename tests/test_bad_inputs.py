"""Every bad input: one error line naming the file and the fault, a non-zero exit, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_inputs import CASES, Case, invoke
from tests.outputs import file_tree


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_cleanly(case: Case, tmp_path: Path) -> None:
    args = case.build(tmp_path)
    before = file_tree(tmp_path)
    code, err = invoke(args)
    lines = err.strip().splitlines()
    assert code == case.exit_code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("segpipe: error: "), err
    assert case.expect in lines[0], lines[0]
    assert file_tree(tmp_path) == before  # nothing written or marked done
    assert not (tmp_path / "out").exists() or case.name == "output holds another model's mask"
    assert not (tmp_path / "mlflow.db").exists()


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 25
