"""orjson's parser when it is installed, for the few places where JSON parsing is most of the work.

The ``collector``, ``fastapi`` and ``flask`` extras install orjson; the core does not need it.
Callers fall back to the standard library whenever orjson refuses a document, so what they accept
is what ``json.loads`` accepts (orjson refuses NaN and Infinity, integers beyond 64 bits and lone
surrogates, which the standard library reads), except that integers beyond 64 bits that orjson
does read come out as floats.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["fast_loads", "loads"]


def _orjson_loads() -> Callable[[bytes], Any] | None:
    try:
        from orjson import loads
    except ImportError:
        return None
    return loads


#: ``orjson.loads`` (bytes in, raises on anything it refuses), or None when orjson is not installed.
fast_loads = _orjson_loads()


def loads(raw: bytes) -> Any:
    """``json.loads(raw.decode("utf-8"))``, by orjson when it is installed and reads `raw`; raises
    what the standard library raises (ValueError, RecursionError) for what neither reads."""
    if fast_loads is not None:
        try:
            return fast_loads(raw)
        except Exception:  # not JSON, or JSON orjson refuses: the standard library decides
            pass
    return json.loads(raw.decode("utf-8"))
