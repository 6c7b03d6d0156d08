"""The aggregator's optional C loops (`mlwatch._speedups`), or None where they are not in use.

Built by `pip install` wherever a C compiler is present; without one mlwatch installs and gives the
same results through its Python paths, only slower. ``MLWATCH_SPEEDUPS=0`` in the environment turns
them off (to rule them out when something looks wrong). Read `SPEEDUPS` at call time (tests swap it).
The loops rely on the GIL, so a free-threaded CPython running without it does not load them
(importing an extension that does not declare itself free-threading-safe would switch the GIL back
on for the whole host process).
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

import numpy as np

__all__ = ["AVAILABLE", "SPEEDUPS"]


def _load() -> ModuleType | None:
    gil_enabled = getattr(sys, "_is_gil_enabled", None)  # 3.13+; before it there is always a GIL
    if (gil_enabled is not None and not gil_enabled()) or os.environ.get("MLWATCH_SPEEDUPS", "").strip() == "0":
        return None
    try:
        from mlwatch import _speedups

        _speedups.set_float64(np.float64)
    except Exception:  # not built (no compiler), or a numpy whose float64 is laid out differently
        return None
    return _speedups


SPEEDUPS: ModuleType | None = _load()

#: Whether the C loops are in use in this installation.
AVAILABLE: bool = SPEEDUPS is not None
