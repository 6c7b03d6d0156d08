"""Request and response bodies of model routes, kept raw on the request path and parsed off it.

What: `BodyBuffer` collects body chunks up to a byte cap (a body over the cap is not kept at all:
half a JSON document is no use); `json_fields` turns kept bytes into features, on mlwatch's
aggregator thread when a batch is profiled. A JSON object's scalar fields become features; nested
objects are flattened with dots (``{"user": {"age": 3}}`` gives ``user.age``); short arrays of
scalars give one feature per index (``x.0``, ``x.1``, ...); anything else (long arrays, arrays of
objects) is skipped.

Why: parsing JSON on the request path would add its cost to every model-route request. Raw
``bytes`` also take the recorder's cheapest path (immutable: kept by reference, no copy), and the
model route's recorder parses a whole batch at once before the generic aggregation. Parsing is
most of that aggregation's cost, so it uses orjson when installed (the ``fastapi`` and ``flask``
extras install it; 3-5x faster on small bodies), with the standard library deciding whatever
orjson refuses (see `mlwatch._json`): the answer is what ``json.loads`` gives, except that
integers beyond 64 bits may come out as floats (as every number is profiled anyway). A body that
is not a JSON object becomes no features, counted under
``mlwatch.health()["dropped"]["http_body_not_json"]``; the call itself still counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any

from mlwatch import _fast
from mlwatch._gil import offer
from mlwatch._health import HEALTH
from mlwatch._json import fast_loads as _fast_loads

__all__ = ["BodyBuffer", "MAX_ARRAY_ITEMS", "MAX_FIELDS", "PARSE_BYTES", "flatten", "json_fields", "json_rows", "json_value"]

#: Arrays of scalars longer than this are skipped (a feature per index would explode the columns).
MAX_ARRAY_ITEMS = 64
#: Features taken from one body at most; the rest are dropped (bounded work per request).
MAX_FIELDS = 256
#: Body bytes parsed between two offers of the GIL by `json_rows` (see `mlwatch._gil`).
PARSE_BYTES = 128 * 1024
_SCALARS = (str, int, float, bool, type(None))
_SCALAR_SET = frozenset(_SCALARS)
#: The standard library's C scanner, called directly: `json.JSONDecoder.decode` wraps it in two
#: Python frames and two regular-expression matches, which cost as much again as the scan.
_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # set in __init__, not in typeshed
_JSON_SPACE = " \t\n\r"


class BodyBuffer:
    """Body chunks up to `cap` bytes; past the cap it keeps nothing and says so (`over`)."""

    __slots__ = ("cap", "chunks", "over", "size")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.chunks: list[bytes] = []
        self.size = 0
        self.over = False

    def add(self, chunk: bytes) -> None:
        if not chunk or self.over:
            return
        self.size += len(chunk)
        if self.size > self.cap:
            self.over = True
            self.chunks = []
            return
        self.chunks.append(chunk if type(chunk) is bytes else bytes(chunk))  # a bytearray or memoryview is copied: it may be reused

    def raw(self) -> bytes | None:
        """The kept body, or None (over the cap, counted, or empty)."""
        if self.over:
            HEALTH.count_dropped("http_body_too_large")
            return None
        chunks = self.chunks
        if not chunks:
            return None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def peek(self) -> bytes | None:
        """The body kept so far, or None (over the cap, or empty); counts nothing."""
        if self.over or not self.chunks:
            return None
        return self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)


def flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    """Scalar leaves of a parsed JSON value into `out`, keyed by dotted paths (bounded)."""
    if len(out) >= MAX_FIELDS:
        return
    if isinstance(value, _SCALARS):
        out[prefix] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and prefix and len(value) <= MAX_ARRAY_ITEMS and all(isinstance(v, _SCALARS) for v in value):
        for i, v in enumerate(value):
            if len(out) >= MAX_FIELDS:
                return
            out[f"{prefix}.{i}"] = v


def json_value(raw: bytes) -> Any:
    """The parsed JSON document, or None when `raw` is not JSON (as ``json.loads`` decides). Never raises."""
    if _fast_loads is not None:
        try:
            return _fast_loads(raw)
        except Exception:  # not JSON, or JSON orjson refuses (NaN, integers over 64 bits, lone surrogates): the standard library decides
            pass
    try:
        text = raw.decode("utf-8")
        start = len(text) - len(text.lstrip(_JSON_SPACE)) if text[:1] in _JSON_SPACE else 0
        value, end = _scan_once(text, start)
        if end != len(text) and text[end:].strip(_JSON_SPACE):  # extra data after the document
            return None
        return value
    except (ValueError, RecursionError, StopIteration):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None


def json_fields(raw: bytes, *, count: bool = True) -> dict[str, Any]:
    """The features of a JSON object body (flattened, bounded); {} (counted unless `count` is False) for anything else. Never raises."""
    return _fields(json_value(raw), count)


def _fields(parsed: Any, count: bool) -> dict[str, Any]:
    if type(parsed) is dict and len(parsed) <= MAX_FIELDS and all(map(_SCALAR_SET.__contains__, map(type, parsed.values()))):
        return parsed  # the common case: a flat object, used as it is
    fields: dict[str, Any] = {}
    if isinstance(parsed, dict):
        flatten(parsed, "", fields)
    elif count:
        HEALTH.count_dropped("http_body_not_json")
    return fields


def json_rows(raws: Sequence[bytes], *, count: bool = True) -> list[dict[str, Any]]:
    """`json_fields` of each of `raws`, a part of at most `PARSE_BYTES` at a time with the GIL offered
    in between (orjson holds it while it parses, a 64 KiB body for a millisecond or so)."""
    if sum(map(len, raws)) <= PARSE_BYTES:
        return _rows(raws, count)
    out: list[dict[str, Any]] = []
    start = size = 0
    for i, raw in enumerate(raws):
        size += len(raw)
        if size >= PARSE_BYTES or i == len(raws) - 1:
            if start:
                offer()
            out.extend(_rows(raws[start : i + 1], count))
            start, size = i + 1, 0
    return out


def _rows(raws: Sequence[bytes], count: bool) -> list[dict[str, Any]]:
    """`json_fields` of each body: in a few C passes when orjson reads every one of them as a flat
    JSON object (the common case: one model's requests look alike), else body by body."""
    if _fast_loads is not None and raws:
        try:
            parsed = list(map(_fast_loads, raws))
        except Exception:  # one of them is not JSON orjson reads: each is parsed (and counted) alone
            return [json_fields(raw, count=count) for raw in raws]
        speedups = _fast.SPEEDUPS
        if speedups is not None:
            flat = speedups.flat_dict_rows(parsed, _SCALAR_SET, MAX_FIELDS)
        else:
            flat = (
                set(map(type, parsed)) == {dict}
                and max(map(len, parsed)) <= MAX_FIELDS
                and _SCALAR_SET.issuperset(map(type, chain.from_iterable(map(dict.values, parsed))))
            )
        if flat:
            return parsed
        return [_fields(doc, count) for doc in parsed]  # what orjson read is what json_value gives
    return [json_fields(raw, count=count) for raw in raws]
