"""Turn buffered call records into profile updates (runs on the aggregator thread, in batches).

A call's inputs are its bound arguments: a tabular argument (dict, DataFrame, 2-D array, list of
rows, pydantic model, dataclass) contributes its columns; a scalar argument is a feature named
after its parameter. Rows of scalar features from many calls are collected and profiled in one
vectorised pass per column; batch arguments (frames, arrays) are profiled per call, every row
counting. Outputs follow the same rules, with class-probability matrices summarised as the
predicted class and its score.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mlwatch._tabular import SCALAR_TYPES, is_row_dict, to_columns
from mlwatch.profile import Profile
from mlwatch.profiling import ProfileConfig, update_profile

__all__ = ["PREDICTION", "SCALAR_TYPES", "Binding", "CallInputs", "apply_rows", "split_by_segment", "split_inputs", "split_outputs"]

#: Outputs named when the model returns an unnamed scalar or vector.
PREDICTION = "prediction"


@dataclasses.dataclass(frozen=True)
class Binding:
    """How a function's positional arguments map to names; computed once, at decoration time."""

    names: tuple[str, ...]
    skip: int  # leading arguments never recorded (self / cls)
    varargs: str | None

    @classmethod
    def of(cls, fn: Callable[..., Any], *, is_method: bool) -> Binding:
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            return cls((), 0, "args")
        positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        varargs = next((p.name for p in params if p.kind is p.VAR_POSITIONAL), None)
        skip = 1 if is_method and positional and positional[0] in ("self", "cls") else 0
        return cls(tuple(positional[skip:]), skip, varargs)

    def name_of(self, index: int) -> str:
        if index < len(self.names):
            return self.names[index]
        return f"{self.varargs or 'arg'}{index - len(self.names)}"




def _is_tabular(value: Any) -> bool:
    t = type(value)
    if t in SCALAR_TYPES:
        return False
    if t is dict or isinstance(value, Mapping):
        return True
    if isinstance(value, np.ndarray):
        return value.ndim >= 1
    if isinstance(value, list):
        return True
    module = t.__module__ or ""
    if module.startswith(("pandas", "polars", "pyarrow")):
        return True
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return True
    return callable(getattr(value, "model_dump", None))


def _row_of(value: Any) -> dict[str, Any] | None:
    """A single row's features if `value` is one row (a dict of scalars, a model, a dataclass)."""
    if type(value) is dict:
        return value if is_row_dict(value) else None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        out = dump()
        return out if isinstance(out, dict) else None
    return None


class CallInputs:
    """Accumulates one group's inputs: scalar rows to profile together, batches to profile now."""

    __slots__ = ("batches", "rows")

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.batches: list[Any] = []


def split_inputs(binding: Binding, args: tuple[Any, ...], kwargs: Mapping[str, Any] | None, into: CallInputs) -> None:
    """Add one call's arguments to `into` (args exclude self/cls already)."""
    if not kwargs and len(args) == 1:  # the common case: predict(features)
        only = args[0]
        if _is_tabular(only):
            single = _row_of(only)
            if single is not None:
                into.rows.append(single)
            else:
                into.batches.append(only)
            return
        into.rows.append({binding.name_of(0): only})
        return
    row: dict[str, Any] = {}
    items = [(binding.name_of(i), a) for i, a in enumerate(args)]
    if kwargs:
        items.extend(kwargs.items())
    for name, value in items:
        if _is_tabular(value):
            sub = _row_of(value)
            if sub is not None:
                row.update(sub)
            else:
                into.batches.append(value)
        else:
            row[name] = value
    if row:
        into.rows.append(row)


def _looks_like_probabilities(arr: np.ndarray[Any, Any]) -> bool:
    if arr.ndim != 2 or arr.shape[1] < 2 or arr.dtype.kind != "f" or arr.size == 0:
        return False
    with np.errstate(invalid="ignore"):
        return bool(np.all((arr >= 0) & (arr <= 1)) and np.allclose(arr.sum(axis=1), 1.0, atol=1e-3))


def split_outputs(result: Any, rows: list[dict[str, Any]], batches: list[Any]) -> None:
    """Add one call's result: scalars become one row, vectors and frames become batches."""
    if result is None:
        return
    t = type(result)
    if t in SCALAR_TYPES:
        rows.append({PREDICTION: result})
        return
    if isinstance(result, np.ndarray):
        if result.ndim == 0:
            rows.append({PREDICTION: result.item()})
        elif result.ndim == 1 or (result.ndim == 2 and result.shape[1] == 1):
            batches.append({PREDICTION: result.reshape(-1)})
        elif _looks_like_probabilities(result):
            batches.append({"predicted_class": result.argmax(axis=1), "score": result.max(axis=1)})
        else:
            flat = result.reshape(result.shape[0], -1)
            batches.append({f"{PREDICTION}_{i}": flat[:, i] for i in range(flat.shape[1])})
        return
    if isinstance(result, Mapping):
        row = _row_of(dict(result))
        if row is not None:
            rows.append(row)
        else:
            batches.append(dict(result))
        return
    if isinstance(result, (list, tuple)):
        if result and all(type(v) in SCALAR_TYPES for v in result):
            batches.append({PREDICTION: list(result)})
        else:
            batches.append(result)
        return
    module = t.__module__ or ""
    if module.startswith(("pandas", "polars")) and not hasattr(result, "columns"):
        batches.append({PREDICTION: result})
        return
    batches.append(result)


def apply_rows(profile: Profile, rows: Sequence[dict[str, Any]], config: ProfileConfig, section: str) -> None:
    """Profile rows of scalar features column by column, in one pass per column."""
    if rows:
        update_profile(profile, list(rows), config, section=section)


def split_by_segment(batch: Any, keys: Sequence[str]) -> list[tuple[dict[str, str], Any]]:
    """Split a batch input (frame, array, rows) into per-segment dicts of columns."""
    _, cols = to_columns(batch)
    if not cols or any(k not in cols for k in keys):
        return [(dict.fromkeys(keys, "__missing__"), cols)]
    arrays = {name: _as_object_array(values) for name, values in cols.items()}
    n = min(len(a) for a in arrays.values())
    key_labels = [list(map(_label, arrays[k][:n].tolist())) for k in keys]
    labels = np.empty(n, dtype=object)
    labels[:] = ["\x1f".join(parts) for parts in zip(*key_labels, strict=True)]
    out = []
    for value in dict.fromkeys(labels.tolist()):
        idx = np.flatnonzero(labels == value)
        segment = dict(zip(keys, str(value).split("\x1f"), strict=True))
        out.append((segment, {name: a[:n][idx] for name, a in arrays.items()}))
    return out


def _label(value: Any) -> str:
    return "__missing__" if value is None or (isinstance(value, float) and value != value) else str(value)[:200]


def _as_object_array(values: Any) -> np.ndarray[Any, Any]:
    if isinstance(values, np.ndarray):
        return values
    to_numpy = getattr(values, "to_numpy", None)
    if callable(to_numpy):
        return np.asarray(to_numpy())
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out
