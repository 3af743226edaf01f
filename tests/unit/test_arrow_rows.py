"""segpipe.arrow_rows: the same table as ``pa.Table.from_pylist`` for plain values, without importing pandas."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from segpipe.arrow_rows import table_from_rows

INT64 = st.integers(-(2**63), 2**63 - 1)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
TIMES = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)).map(
    lambda t: t.replace(tzinfo=UTC)
)
VALUES = st.one_of(st.booleans(), INT64, FLOATS, st.text(), TIMES)


def _same(rows: list[dict[str, Any]]) -> None:
    built, reference = table_from_rows(rows), pa.Table.from_pylist(rows)
    assert built.schema == reference.schema
    for name in reference.column_names:
        left, right = built.column(name).to_pylist(), reference.column(name).to_pylist()
        assert [_nan_free(v) for v in left] == [_nan_free(v) for v in right]


def _nan_free(value: Any) -> Any:
    return "nan" if isinstance(value, float) and value != value else value


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from("abcd"), st.one_of(st.none(), VALUES)), min_size=1, max_size=6))
def test_rows_of_one_kind_per_column_give_the_table_from_pylist_gives(rows: list[dict[str, Any]]) -> None:
    kinds: dict[str, str] = {}
    for row in rows:
        for key, value in row.items():
            kind = "number" if type(value) in (int, float) else type(value).__name__
            assume(value is None or kinds.setdefault(key, kind) == kind)  # from_pylist refuses mixed kinds
    assume(all(list(row) == list(rows[0]) for row in rows))  # from_pylist takes the first row's keys only
    _same(rows)


def test_a_results_like_row_matches_from_pylist_column_by_column() -> None:
    started = datetime(2026, 12, 4, 19, 48, 22, 123456, tzinfo=UTC)
    rows = [
        {"run_id": "r", "run_started_at": started, "skipped": False, "height": 512, "megapixels": 0.262144,
         "mean_iou": 0.97, "foreground_fraction": None, "model_version": "", "pixels_nucleus": 67_108_864},
        {"run_id": "r", "run_started_at": started, "skipped": True, "height": 2048, "megapixels": 4.194304,
         "mean_iou": None, "foreground_fraction": None, "model_version": "3", "pixels_nucleus": None},
    ]  # fmt: skip
    _same(rows)
    assert table_from_rows(rows).column("run_started_at")[0].as_py() == started


def test_ints_and_floats_in_one_column_are_doubles_and_a_key_missing_from_a_row_is_null() -> None:
    table = table_from_rows([{"a": 1, "b": "x"}, {"a": 2.5}])
    assert table.schema == pa.schema([("a", pa.float64()), ("b", pa.string())])
    assert table.to_pylist() == [{"a": 1.0, "b": "x"}, {"a": 2.5, "b": None}]


def test_numpy_scalars_are_the_python_numbers_they_hold() -> None:
    table = table_from_rows([{"n": np.int32(7), "x": np.float32(0.5), "f": np.bool_(True)}])
    assert table.schema == pa.schema([("n", pa.int64()), ("x", pa.float64()), ("f", pa.bool_())])
    assert table.to_pylist() == [{"n": 7, "x": 0.5, "f": True}]


def test_values_of_other_kinds_go_through_from_pylist() -> None:
    local = datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    for rows in ([{"t": local}], [{"t": datetime(2026, 1, 1)}], [{"l": [1, 2]}], [{"m": 1, "n": None}, {"m": "x"}]):
        try:
            reference = pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            continue
        assert table_from_rows(rows).equals(reference)


def test_building_the_results_table_does_not_import_pandas() -> None:
    code = (
        "import sys; from datetime import UTC, datetime; from segpipe.arrow_rows import table_from_rows; "
        "import pyarrow.parquet as pq, io; "
        "t = table_from_rows([{'a': 1, 'b': 'x', 'c': datetime.now(UTC), 'd': None, 'e': True, 'f': 0.5}]); "
        "pq.write_table(t, io.BytesIO()); print('pandas' in sys.modules)"
    )
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert finished.stdout.strip() == "False"
