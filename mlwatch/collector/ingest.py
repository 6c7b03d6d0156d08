"""``POST /v1/logs`` and ``POST /v1/metrics``: the OTLP/HTTP receiver.

Order of work for every request, cheapest check first, and nothing parsed before its limit:
authentication (401), the concurrency slot (429 + Retry-After), the content type (415), the body
read under its cap with streaming gunzip (413), the OTLP decode (400), then per ``mlwatch.profile``
record: skip it when this instance already sent these exact bytes (idempotent retries cost a hash),
else validate and decode it in the ingest worker (HMAC, wire caps, the structural validators, and
only then datasketches; one worker call per request, each record retried alone if the worker dies
on the batch, so only the poisonous record is lost), and store them in one transaction. One bad record does not sink its neighbours: the reply is an
OTLP partial success naming the rejected count; when every profile record is rejected the status
is 400 (bad data: retrying cannot help), 413 (every one over the profile size cap) or 500 (the
worker crashed on it).
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from mlwatch.collector import otlp_decode
from mlwatch.collector.errors import HttpError
from mlwatch.collector.limits import read_body
from mlwatch.collector.store import ProfileRow, SeriesKey
from mlwatch.collector.worker import WorkerCrashed, WorkerTimeout

if TYPE_CHECKING:
    from mlwatch.collector.app import CollectorState

__all__ = ["otlp_logs", "otlp_metrics"]


def _state(request: Request) -> CollectorState:
    state: CollectorState = request.app.state.collector
    return state


async def _read(request: Request, state: CollectorState) -> tuple[str, bytes]:
    state.auth.check(request.headers)
    kind = otlp_decode.media_type(request.headers.get("content-type"))
    body = await read_body(request.headers, request.stream(), state.config.max_body_bytes)
    state.metrics.ingest_bytes.inc(len(body))
    return kind, body


async def otlp_metrics(request: Request) -> Response:
    """Accept OTLP metrics (validated as OTLP, not stored) so a standard exporter pipeline stays green."""
    state = _state(request)
    with state.limiter.slot():
        kind, body = await _read(request, state)
        await anyio.to_thread.run_sync(otlp_decode.decode_metrics, body, kind)
    return Response(otlp_decode.metrics_response(kind), media_type=kind)


async def otlp_logs(request: Request) -> Response:
    """Receive OTLP logs; store every valid ``mlwatch.profile`` record, ignore other records."""
    state = _state(request)
    with state.limiter.slot():
        kind, body = await _read(request, state)
        decoded = await anyio.to_thread.run_sync(otlp_decode.decode_logs, body, kind)
        records, ignored = otlp_decode.extract_profiles(decoded)
        if ignored:
            state.metrics.profiles.labels("ignored_other_records").inc(ignored)
        rows: list[ProfileRow] = []
        errors: list[str] = []
        statuses: set[int] = set()
        crashed = 0
        todo: list[tuple[otlp_decode.ProfileRecord, bytes, str]] = []
        for record in records:
            try:
                todo.append((record, *_precheck(state, record)))
            except HttpError as exc:
                state.metrics.rejections.labels(exc.code).inc()
                errors.append(exc.message)
                statuses.add(exc.status)
        known = await anyio.to_thread.run_sync(_known, state, todo) if todo else set()
        duplicates = sum(1 for _, _, digest in todo if digest in known)
        todo = [t for t in todo if t[2] not in known]
        for (record, payload, digest), outcome in zip(todo, await _validate(state, [t[1] for t in todo]), strict=True):
            if outcome[0] == "ok":
                rows.append(_row(record, payload, digest, outcome[1]))
                continue
            reason, message = outcome[1], outcome[2]
            if reason in ("worker_crash", "worker_timeout"):
                crashed += 1
                statuses.add(500)
            else:
                reason = "invalid_profile"
                statuses.add(400)
            state.metrics.rejections.labels(reason).inc()
            errors.append(message)
        added = await anyio.to_thread.run_sync(state.store.add_profiles, rows) if rows else []
        n_new = sum(added)
        now = time.time()
        for row, new in zip(rows, added, strict=True):
            if new:
                state.late_hours.note(row.key.model, row.window_start, now)
        duplicates += len(added) - n_new
        state.metrics.profiles.labels("stored").inc(n_new)
        state.metrics.profiles.labels("duplicate").inc(duplicates)
        state.metrics.profiles.labels("rejected").inc(len(errors))
    if errors and not rows and not duplicates:
        if crashed:
            raise HttpError(500, "worker_crashed", f"{len(errors)} profile record(s) rejected; first: {errors[0]}")
        if statuses == {413}:
            raise HttpError(413, "profile_too_large", f"{len(errors)} profile record(s) over the size limit; first: {errors[0]}")
        raise HttpError(400, "invalid_profile", f"{len(errors)} profile record(s) rejected; first: {errors[0]}")
    message = f"{len(errors)} mlwatch.profile record(s) rejected; first: {errors[0]}" if errors else ""
    return Response(otlp_decode.logs_response(kind, len(errors), message), media_type=kind)


def _precheck(state: CollectorState, record: otlp_decode.ProfileRecord) -> tuple[bytes, str]:
    """The record's payload and its SHA-256, or an `HttpError` when it cannot be a profile we accept."""
    payload = record.payload
    if payload is None:
        raise HttpError(400, "invalid_profile", "an mlwatch.profile record's body must be a bytes value")
    if len(payload) > state.config.limits.max_bytes:
        raise HttpError(413, "profile_too_large", f"profile of {len(payload)} bytes exceeds the {state.config.limits.max_bytes}-byte limit")
    return payload, payload_digest(payload)


def payload_digest(payload: bytes) -> str:
    """The payload's identity for idempotent ingest: its 32-byte trailer, in hex.

    The wire format ends every profile with the SHA-256 (or HMAC-SHA256) of all bytes before it,
    and the worker verifies exactly that before anything is stored, so a stored row's trailer
    identifies its bytes as well as a fresh hash would, without hashing the payload a second time
    (about 50 µs per 60 KB profile on the server's event loop). A payload too short to have a trailer is hashed;
    the worker rejects it anyway. An unverified trailer can only make a record look like a
    duplicate of one already stored, which drops that record and nothing else.
    """
    if len(payload) >= 64:
        return payload[-32:].hex()
    return hashlib.sha256(payload).hexdigest()


def _known(state: CollectorState, todo: list[tuple[otlp_decode.ProfileRecord, bytes, str]]) -> set[str]:
    """Digests this instance already sent (a retried export): skipped before any decoding."""
    by_sender: dict[tuple[str, str], list[str]] = {}
    for record, _, digest in todo:
        by_sender.setdefault((record.service, record.instance), []).append(digest)
    known: set[str] = set()
    for (service, instance), digests in by_sender.items():
        known |= state.store.known_payloads(service, instance, digests)
    return known


async def _validate(state: CollectorState, payloads: list[bytes]) -> list[tuple[Any, ...]]:
    """Validate a request's payloads in the ingest worker, in one call.

    When the worker dies on a batch, each payload is retried alone so only the culprit is lost:
    the outcome is ("ok", identity), ("error", kind, message), or ("error", "worker_crash" /
    "worker_timeout", message).
    """
    if not payloads:
        return []
    try:
        result: list[tuple[Any, ...]] = await state.ingest_pool.call("ingest_batch", payloads)
        return result
    except WorkerCrashed as exc:
        if len(payloads) == 1:
            return [("error", "worker_timeout" if isinstance(exc, WorkerTimeout) else "worker_crash", str(exc))]
    out: list[tuple[Any, ...]] = []
    for payload in payloads:
        out.extend(await _validate(state, [payload]))
    return out


def _row(record: otlp_decode.ProfileRecord, payload: bytes, digest: str, meta: dict[str, Any]) -> ProfileRow:
    return ProfileRow(
        service=record.service,
        instance=record.instance,
        key=SeriesKey(record.service, meta["model"], meta["version"] or "", meta["segment_key"]),
        window_start=float(meta["window_start"]),
        window_end=float(meta["window_end"]),
        content_hash=digest,
        n_rows=int(meta["rows"]),
        calls=int(meta["calls"]),
        errors=int(meta["errors"]),
        payload=payload,
        features=tuple((str(r), str(n), str(k)) for r, n, k in meta["features"]),
    )
