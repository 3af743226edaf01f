"""Rows of plain values as an Arrow table, without importing pandas.

``pa.Table.from_pylist`` builds each column with ``pa.array``, which imports pandas to ask whether its input is a
pandas object: 0.25-0.3 s at the end of every ``segpipe run`` (its results table is the last thing it writes), for a
library the run does not use. The columns here are built from their buffers instead, with the types ``from_pylist``
infers for such values: None-only -> null, bool, int64, double (ints and floats mixed too), string, timestamp[us, UTC]
(times in UTC); numpy scalars as the Python numbers they hold (int64, double). Columns of any other values go
through ``from_pylist``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def table_from_rows(rows: Sequence[dict[str, Any]]) -> pa.Table:
    """The table of ``rows`` (dicts of column -> value; a key missing from a row is a null there)."""
    names = list(dict.fromkeys(key for row in rows for key in row))
    columns = [_column([row.get(name) for row in rows]) for name in names]
    if any(column is None for column in columns):
        return pa.Table.from_pylist(list(rows))
    return pa.Table.from_arrays(columns, names=names)


def _column(values: list[Any]) -> pa.Array | None:
    """One column, or None when its values are of a kind not built here."""
    present = [v for v in values if v is not None]
    kinds = {_kind(v) for v in present}
    validity = _bits([v is not None for v in values]) if len(present) < len(values) else None
    if not kinds:
        return pa.nulls(len(values))
    if kinds in ({"int"}, {"float"}, {"int", "float"}, {"bool"}):
        kind = "float" if "float" in kinds else kinds.pop()
        return _numbers(values, kind, validity)
    if kinds == {"str"}:
        return _strings(values, validity)
    if kinds == {"datetime"}:
        return _timestamps(values, present, validity)
    return None


def _kind(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int | np.integer):
        return "int"
    if isinstance(value, float | np.floating):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, datetime):
        return "datetime"
    return "other"


def _bits(flags: list[bool]) -> pa.Buffer:
    """Arrow's bitmap: one bit per value, least significant first."""
    return pa.py_buffer(np.packbits(np.array(flags, dtype=bool), bitorder="little"))


def _numbers(values: list[Any], kind: str, validity: pa.Buffer | None) -> pa.Array:
    if kind == "bool":
        data = _bits([bool(v) for v in values])
        return pa.Array.from_buffers(pa.bool_(), len(values), [validity, data])
    dtype, arrow_type = (np.float64, pa.float64()) if kind == "float" else (np.int64, pa.int64())
    data = np.array([0 if v is None else v for v in values], dtype=dtype)
    return pa.Array.from_buffers(arrow_type, len(values), [validity, pa.py_buffer(data)])


def _strings(values: list[Any], validity: pa.Buffer | None) -> pa.Array | None:
    encoded = [b"" if v is None else v.encode() for v in values]
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    if offsets[-1] >= 2**31:
        return None  # beyond a string column's 32-bit offsets
    buffers = [validity, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))]
    return pa.Array.from_buffers(pa.string(), len(values), buffers)


def _timestamps(values: list[Any], present: list[datetime], validity: pa.Buffer | None) -> pa.Array | None:
    if any(v.tzinfo is not UTC for v in present):
        return None  # naive or other zones: as from_pylist names and converts them
    micros = np.array([0 if v is None else (v - EPOCH) // MICROSECOND for v in values], dtype=np.int64)
    return pa.Array.from_buffers(pa.timestamp("us", tz="UTC"), len(values), [validity, pa.py_buffer(micros)])
