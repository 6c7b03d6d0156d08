"""Turn the shapes users hand us (frames, arrays, rows, dicts, objects) into named columns.

pandas, polars and pyarrow are recognised by their module name and never imported here, so
`import mlwatch` stays cheap for users who have none of them.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from mlwatch import _fast
from mlwatch._gil import offer

__all__ = ["SCALAR_TYPES", "StrCounts", "TypedColumn", "is_row_dict", "to_columns"]

Columns = dict[str, Any]

#: Values the C loops read (`_from_dict_rows`) between two offers of the GIL (`mlwatch._gil`).
READ_CHUNK = 16_384

#: Types of a single value (not a row, not a column).
SCALAR_TYPES: frozenset[type] = frozenset({str, int, float, bool, type(None), np.float64, np.int64, np.float32, np.int32, np.bool_})


def _module(obj: object) -> str:
    return type(obj).__module__ or ""


def to_columns(
    data: Any, feature_names: Sequence[str] | None = None, *, float_arrays: bool = False, string_counts: bool = False
) -> tuple[int, Columns]:
    """(row count, {column name: batch of values}) for any supported input shape.

    Never raises for odd data: an unrecognised object becomes a single column ``value`` so its
    type is counted as a data-quality signal rather than lost. For callers that only profile the
    columns (what a column profile makes of the values is the same, not the values themselves):
    with `float_arrays`, a column of floats and ints in dict rows may come back as a float64 array
    (3 becomes 3.0); with `string_counts`, a column of strings may come back counted (`StrCounts`).
    """
    mod = _module(data)
    if mod.startswith("pandas") and hasattr(data, "columns") and hasattr(data, "iloc"):
        return len(data), {str(c): data[c] for c in data.columns} if data.columns.is_unique else _dedupe_pandas(data)
    if mod.startswith("polars") and hasattr(data, "columns") and hasattr(data, "height"):
        return int(data.height), {str(c): data[c] for c in data.columns}
    if mod.startswith("pyarrow") and hasattr(data, "column_names"):
        return int(data.num_rows), {
            str(name): data.column(i).to_numpy(zero_copy_only=False) for i, name in enumerate(data.column_names)
        }
    if isinstance(data, np.ndarray):
        return _from_array(data, feature_names)
    if isinstance(data, Mapping):
        return _from_mapping(data)
    if isinstance(data, (list, tuple)):
        return _from_rows(data, feature_names, float_arrays, string_counts)
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return 1, {f.name: [getattr(data, f.name, None)] for f in dataclasses.fields(data)}
    dump = getattr(data, "model_dump", None)  # pydantic v2
    if callable(dump) and not isinstance(data, type):
        fields = dump()
        if isinstance(fields, Mapping):
            return 1, {str(k): [v] for k, v in fields.items()}
    return 1, {"value": [data]}


def _dedupe_pandas(df: Any) -> Columns:
    cols: Columns = {}
    for i, c in enumerate(df.columns):
        name = str(c) if str(c) not in cols else f"{c}.{i}"
        cols[name] = df.iloc[:, i]
    return cols


def _names(n: int, feature_names: Sequence[str] | None) -> list[str]:
    if feature_names is not None and len(feature_names) == n:
        return [str(x) for x in feature_names]
    return [f"f{i}" for i in range(n)]


def _from_array(arr: np.ndarray[Any, Any], feature_names: Sequence[str] | None) -> tuple[int, Columns]:
    if arr.dtype.names:  # structured array: named fields
        return int(arr.shape[0]) if arr.ndim else 1, {str(n): arr[n].reshape(-1) for n in arr.dtype.names}
    if arr.ndim == 0:
        return 1, {_names(1, feature_names)[0] if feature_names else "value": arr.reshape(1)}
    if arr.ndim == 1:
        name = str(feature_names[0]) if feature_names is not None and len(feature_names) == 1 else "value"
        return int(arr.shape[0]), {name: arr}
    flat = arr.reshape(arr.shape[0], -1)
    names = _names(flat.shape[1], feature_names)
    return int(flat.shape[0]), {name: flat[:, i] for i, name in enumerate(names)}


def _from_mapping(data: Mapping[Any, Any]) -> tuple[int, Columns]:
    """A dict of columns (lists/arrays/Series) or a single row (a dict of scalars)."""
    cols: Columns = {}
    rows = 0
    columnar = not is_row_dict(data)
    for key, value in data.items():
        name = str(key)
        if columnar:
            cols[name] = value
            rows = max(rows, _length(value))
        else:
            cols[name] = [value]
            rows = 1
    return rows, cols


def is_row_dict(data: Mapping[Any, Any]) -> bool:
    """A dict is one row of features unless every value is a column (list, array, Series).

    `_from_mapping` reads it the same way, so this is the one rule for "row or dict of columns".
    """
    for first in data.values():
        return type(first) in SCALAR_TYPES or not all(map(_is_batch, data.values()))
    return True


def _is_batch(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.ndim >= 1
    if isinstance(value, list):
        return True
    mod = _module(value)
    return mod.startswith(("pandas", "polars")) and hasattr(value, "dtype")


def _length(value: Any) -> int:
    try:
        return len(value)
    except Exception:
        return 1


def _from_rows(
    rows: Sequence[Any], feature_names: Sequence[str] | None, float_arrays: bool = False, string_counts: bool = False
) -> tuple[int, Columns]:
    """A list of dict rows (keys may differ: absent keys count as missing) or of sequences."""
    n = len(rows)
    if n == 0:
        return 0, {}
    first = rows[0]
    fast = _fast.SPEEDUPS
    if type(first) is dict:
        rows_list = rows if type(rows) is list else list(rows)
        width = fast.dict_rows_width(rows_list) if fast is not None else (-1 if set(map(type, rows)) == {dict} else -2)
        if width != -2:  # every row a dict (of one width when >= 0)
            return n, _from_dict_rows(rows_list, float_arrays, string_counts, width)
    if isinstance(first, Mapping):
        keys: dict[Any, None] = {}
        for row in rows:
            if isinstance(row, Mapping):
                keys.update(dict.fromkeys(row))
        cols: Columns = {}
        for key in keys:
            cols[str(key)] = [row.get(key) if isinstance(row, Mapping) else None for row in rows]
        return n, cols
    if isinstance(first, (list, tuple, np.ndarray)):
        width = max((len(r) for r in rows if isinstance(r, (list, tuple, np.ndarray))), default=0)
        names = _names(width, feature_names)
        cols = {
            name: [r[i] if isinstance(r, (list, tuple, np.ndarray)) and i < len(r) else None for r in rows]
            for i, name in enumerate(names)
        }
        return n, cols
    name = str(feature_names[0]) if feature_names is not None and len(feature_names) == 1 else "value"
    return n, {name: list(rows)}


class TypedColumn(list[Any]):
    """A column as a list, carrying the set of its values' types (computed once, reused)."""

    __slots__ = ("types",)

    def __init__(self, values: Iterable[Any], types: set[type] | None = None) -> None:
        super().__init__(values)
        self.types = set(map(type, self)) if types is None else types


class StrCounts:
    """A column of strings, already counted: {value: count} over `n` rows (`ColumnProfile.update` takes it)."""

    __slots__ = ("counts", "n")

    def __init__(self, counts: dict[str, int], n: int) -> None:
        self.counts = counts
        self.n = n


def _from_dict_rows(rows: list[dict[Any, Any]], float_arrays: bool = False, string_counts: bool = False, width: int = -1) -> Columns:
    """Dict rows, fast: columns from the first row's keys, then a scan only of rows that may differ.

    With the C loops (`mlwatch._fast`) and as asked, a column of floats and ints becomes a float64
    array and a column of strings its counts, all in one pass over the rows; any other
    column, or one with a value of another type, is read in C by `map` of an `itemgetter` over the
    rows, one column at a time. The GIL is offered between reads (`mlwatch._gil`). An absent key reads
    as None, which is what it means (missing). Keys the first row lacks can only hide in rows
    longer than the first, or in rows that miss one of its keys (and so hold a None in some
    column): only those rows are scanned for extra keys. `width`: the length every row is known
    to have, or -1.
    """
    first = rows[0]
    n0 = len(first)
    read: dict[Any, Any] = {}  # columns the C loops read
    fast = _fast.SPEEDUPS
    if fast is not None and (float_arrays or string_counts):  # in C, one pass over the rows; what it leaves, as below
        keys = tuple(first)
        n = len(rows)
        block = np.empty((len(keys), n))
        every = max(1, READ_CHUNK // max(1, len(keys)))  # rows between offers of the GIL: about READ_CHUNK values
        got = fast.columns_from_dicts(rows, keys, block, string_counts, offer, every)
        for key, column, floats in zip(keys, got, block, strict=True):
            if column is True and float_arrays:
                read[key] = floats
            elif column is not None and column is not True:
                read[key] = StrCounts(column, n)
        offer()
    cols: dict[Any, Any] = {}
    complete = True
    for key in first:
        if key in read:
            cols[key] = read[key]
            continue
        try:
            cols[key] = TypedColumn(map(operator.itemgetter(key), rows))
        except KeyError:
            complete = False
            cols[key] = TypedColumn([r.get(key) for r in rows])
        offer()
    suspects: set[int] = set()
    if not complete or (width != n0 and sum(map(len, rows)) != n0 * len(rows)):
        suspects.update(i for i, length in enumerate(map(len, rows)) if length != n0)
    if not complete:
        for col in cols.values():  # a column the C loops read holds no None
            if type(None) in getattr(col, "types", ()):
                suspects.update(i for i, v in enumerate(col) if v is None)
    if suspects:
        extra: dict[Any, None] = {}
        for i in suspects:
            for key in rows[i]:
                if key not in first:
                    extra[key] = None
        for key in extra:
            cols[key] = TypedColumn([r.get(key) for r in rows])
    return {(k if type(k) is str else str(k)): v for k, v in cols.items()}
