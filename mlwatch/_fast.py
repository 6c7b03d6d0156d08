"""The aggregator's optional C loops (`mlwatch._speedups`), or None where they were not built.

Built by `pip install` wherever a C compiler is present; without one mlwatch installs and gives the
same results through its Python paths, only slower. Read `SPEEDUPS` at call time (tests swap it).
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

__all__ = ["AVAILABLE", "SPEEDUPS"]

SPEEDUPS: ModuleType | None
try:
    from mlwatch import _speedups as SPEEDUPS
except ImportError:  # built without a compiler: the Python paths do the same work
    SPEEDUPS = None

if SPEEDUPS is not None:
    SPEEDUPS.set_float64(np.float64)

#: Whether the C loops are in use in this installation.
AVAILABLE: bool = SPEEDUPS is not None
