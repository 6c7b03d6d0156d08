"""Request and response bodies of model routes, kept raw on the request path and parsed off it.

What: `BodyBuffer` collects body chunks up to a byte cap (a body over the cap is not kept at all:
half a JSON document is no use); `JsonFields` is a read-only mapping over the kept bytes that
parses them only when someone reads it, i.e. on mlwatch's aggregator thread when the window's
batch is profiled. A JSON object's scalar fields become features; nested objects are flattened
with dots (``{"user": {"age": 3}}`` gives ``user.age``); short arrays of scalars give one feature
per index (``x.0``, ``x.1``, ...); anything else (long arrays, arrays of objects) is skipped.

Why: parsing JSON on the request path would add its cost to every model-route request; the
aggregator already runs in batches off the request path. `JsonFields` passes through mlwatch's
capture untouched (it has no ``__dict__``, so the snapshot step keeps the reference; the bytes are
immutable) and the extractor reads it as a single row, like a pydantic model (``model_dump``).
A body that is not a JSON object becomes no features, counted under
``mlwatch.health()["dropped"]["http_body_not_json"]``; the call itself still counts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from mlwatch._health import HEALTH

__all__ = ["BodyBuffer", "JsonFields", "MAX_ARRAY_ITEMS", "MAX_FIELDS", "flatten"]

#: Arrays of scalars longer than this are skipped (a feature per index would explode the columns).
MAX_ARRAY_ITEMS = 64
#: Features taken from one body at most; the rest are dropped (bounded work per request).
MAX_FIELDS = 256
_SCALARS = (str, int, float, bool, type(None))


class BodyBuffer:
    """Body chunks up to `cap` bytes; past the cap it keeps nothing and says so (`over`)."""

    __slots__ = ("cap", "chunks", "over", "size")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.chunks: list[bytes] = []
        self.size = 0
        self.over = False

    def add(self, chunk: bytes) -> None:
        if self.over or not chunk:
            return
        self.size += len(chunk)
        if self.size > self.cap:
            self.over = True
            self.chunks = []
            return
        self.chunks.append(bytes(chunk))

    def fields(self) -> JsonFields | None:
        """The kept body as lazily parsed fields, or None (over the cap, or empty)."""
        if self.over:
            HEALTH.count_dropped("http_body_too_large")
            return None
        if not self.chunks:
            return None
        return JsonFields(self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks))


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


class JsonFields(Mapping[str, Any]):
    """The fields of a JSON object body, parsed on first read (on the aggregator thread)."""

    __slots__ = ("_fields", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._fields: dict[str, Any] | None = None

    def model_dump(self) -> dict[str, Any]:
        """The flattened fields (the name mlwatch's extractor looks for on one-row objects)."""
        fields = self._fields
        if fields is None:
            fields = {}
            try:
                parsed = json.loads(self._raw)
            except (ValueError, RecursionError):
                parsed = None
            if isinstance(parsed, dict):
                flatten(parsed, "", fields)
            else:
                HEALTH.count_dropped("http_body_not_json")
            self._fields = fields
            self._raw = b""
        return fields

    def __getitem__(self, key: str) -> Any:
        return self.model_dump()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.model_dump())

    def __len__(self) -> int:
        return len(self.model_dump())

    def __repr__(self) -> str:
        return f"JsonFields({self.model_dump()!r})"
