"""What the buffer keeps of a call's arguments, so a record shows the values the model saw.

Servers reuse dicts and numpy buffers between requests, so a reference taken on the hot path can
change before the aggregator reads it. Mutable containers are copied (shallowly: their scalar
values are immutable); immutable values are kept by reference, which costs nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["IMMUTABLE", "snapshot", "snapshot_args"]


def _copy_list(value: list[Any]) -> list[Any]:
    # A list of rows: copy the row dicts too; a list of scalars is copied in one C call.
    if value and type(value[0]) is dict:
        return [v.copy() if type(v) is dict else snapshot(v) for v in value]
    return value.copy()


IMMUTABLE: frozenset[type] = frozenset({str, int, float, bool, type(None), bytes, complex, np.float64, np.int64})

_COPIERS: dict[type, Callable[[Any], Any]] = {
    dict: dict.copy,
    list: _copy_list,
    np.ndarray: np.ndarray.copy,
}


def snapshot(value: Any) -> Any:
    """A copy of `value` that the caller's later mutations cannot change (shallow where safe)."""
    t = type(value)
    if t in IMMUTABLE:
        return value
    copier = _COPIERS.get(t)
    if copier is not None:
        return copier(value)
    if t is tuple:
        return tuple(snapshot(v) for v in value)
    module = t.__module__ or ""
    if module.startswith("pandas") and hasattr(value, "copy"):
        return value.copy()  # deep: pandas before copy-on-write mutates frames in place
    if module.startswith("polars") and hasattr(value, "clone"):
        return value.clone()  # cheap: shares the immutable Arrow buffers
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, np.ndarray):
        return value.copy()
    if hasattr(value, "__dict__") and not callable(value):  # dataclasses, pydantic models, plain objects
        return copy.copy(value)
    return value


def snapshot_args(args: tuple[Any, ...], skip: int) -> tuple[Any, ...]:
    """Snapshot positional arguments after the first `skip` (self or cls are never kept)."""
    if skip:
        args = args[skip:]
    if len(args) == 1:
        return (snapshot(args[0]),)
    return tuple(snapshot(a) for a in args)
