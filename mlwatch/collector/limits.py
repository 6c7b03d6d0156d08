"""Limits applied before any parsing: the request body cap (after decompression) and ingest concurrency.

The body is read as a stream and, when gzip-encoded, decompressed incrementally with an output cap
per step, so a gzip bomb is refused with 413 as soon as its output passes the cap, having used at
most the cap in memory and without inflating the rest. A declared ``Content-Length`` over the cap is
refused before reading a byte. When more ingest requests are in flight than allowed, new ones get
429 with ``Retry-After`` at once instead of queueing without bound.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager

from mlwatch.collector.errors import HttpError

__all__ = ["ConcurrencyLimiter", "read_body"]

_GZIP_WBITS = 16 + zlib.MAX_WBITS


def _too_large(limit: int) -> HttpError:
    return HttpError(413, "payload_too_large", f"request body exceeds the {limit}-byte limit (after decompression)")


async def read_body(headers: Mapping[str, str], stream: AsyncIterator[bytes], limit: int) -> bytes:
    """The request body, decompressed when ``Content-Encoding: gzip``, never more than `limit` bytes.

    Raises `HttpError`: 413 over the limit, 415 for an unsupported encoding, 400 for corrupt gzip.
    """
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip", ""):
        raise HttpError(415, "unsupported_encoding", f"content-encoding {encoding!r} is not supported (use gzip or none)")
    declared = headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _too_large(limit)
        except ValueError:
            raise HttpError(400, "malformed", "invalid Content-Length header") from None
    out = bytearray()
    inflater = zlib.decompressobj(_GZIP_WBITS) if encoding == "gzip" else None
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if inflater is None:
            out += chunk
            if len(out) > limit:
                raise _too_large(limit)
            continue
        if received > limit:  # compressed input alone over the cap
            raise _too_large(limit)
        data = chunk
        while data:
            try:
                piece = inflater.decompress(data, limit + 1 - len(out))
            except zlib.error as exc:
                raise HttpError(400, "malformed", f"corrupt gzip body: {exc}") from None
            out += piece
            if len(out) > limit:
                raise _too_large(limit)
            if inflater.eof:
                break
            data = inflater.unconsumed_tail
    if inflater is not None:
        try:
            out += inflater.flush(limit + 1 - len(out))
        except zlib.error as exc:
            raise HttpError(400, "malformed", f"corrupt gzip body: {exc}") from None
        if len(out) > limit:
            raise _too_large(limit)
        if not inflater.eof:
            raise HttpError(400, "malformed", "truncated gzip body")
        if inflater.unused_data:
            raise HttpError(400, "malformed", "data after the end of the gzip stream")
    return bytes(out)


class ConcurrencyLimiter:
    """At most `limit` holders at once; the next one gets 429 with ``Retry-After`` (never waits)."""

    def __init__(self, limit: int, retry_after: int = 1) -> None:
        self.limit = limit
        self.retry_after = retry_after
        self.active = 0
        self.rejected = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the block (single event loop: no lock needed)."""
        if self.active >= self.limit:
            self.rejected += 1
            raise HttpError(
                429, "overloaded", f"{self.active} ingest requests in flight; retry later",
                {"Retry-After": str(self.retry_after)},
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
