"""The JSON API: what is stored, merged profiles over any range, drift and data quality, references.

Times (``start``, ``end``) are epoch seconds or ISO 8601 (UTC when no offset is given). A range
holds the windows whose start lies in [start, end); without ``end`` it ends after the model's
latest window, without ``start`` it spans the hour before ``end``. ``service``, ``version`` and
``segment`` (the ``k=v,k2=v2`` segment key) restrict a query; otherwise every series of the model
is merged. Native work (merging, drift) runs in the query worker, never in the server process.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mlwatch.collector.errors import HttpError
from mlwatch.collector.references import resolve_reference
from mlwatch.collector.store import Filters, ReferenceRow
from mlwatch.collector.worker import WorkerCrashed, WorkerError

if TYPE_CHECKING:
    from mlwatch.collector.app import CollectorState
    from mlwatch.collector.query import Part

__all__ = [
    "alerts",
    "delete_reference",
    "drift",
    "drift_windows",
    "features",
    "get_reference",
    "health",
    "models",
    "profile",
    "put_reference",
    "quality",
    "quality_windows",
    "services",
    "versions",
    "windows",
]

_METHODS = ("auto", "ks", "psi", "js", "wasserstein", "hellinger", "chisquare")


def _state(request: Request) -> CollectorState:
    state: CollectorState = request.app.state.collector
    state.auth.check(request.headers)
    return state


def _time(value: str, name: str) -> float:
    try:
        t = float(value)
    except ValueError:
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise HttpError(400, "bad_parameter", f"{name} must be epoch seconds or ISO 8601, got {value!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        t = dt.timestamp()
    if not math.isfinite(t):
        raise HttpError(400, "bad_parameter", f"{name} must be finite")
    return t


def _int(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, "bad_parameter", f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise HttpError(400, "bad_parameter", f"{name} must be in [{lo}, {hi}]")
    return value


def _filters(request: Request) -> Filters:
    q = request.query_params
    return Filters(service=q.get("service"), version=q.get("version"), segment=q.get("segment"))


async def _range(request: Request, state: CollectorState, model: str, filters: Filters) -> tuple[float, float]:
    q = request.query_params
    given_start = _time(q["start"], "start") if "start" in q else None
    if "end" in q:
        end = _time(q["end"], "end")
    else:
        latest = await anyio.to_thread.run_sync(state.store.latest_window_end, model, filters)
        if latest is None:
            raise HttpError(404, "not_found", f"no profiles stored for model {model!r} (with these filters)")
        end = latest
    start = given_start if given_start is not None else end - 3600.0
    if start >= end:
        raise HttpError(400, "bad_parameter", "start must be before end")
    return start, end


async def _work(state: CollectorState, op: str, *args: Any) -> Any:
    try:
        return await state.query_pool.call(op, *args)
    except WorkerError as exc:
        status = 404 if exc.kind == "no_data" else 422 if exc.kind == "malformed" else 500
        raise HttpError(status, exc.kind, str(exc)) from None
    except WorkerCrashed as exc:
        raise HttpError(500, "worker_crashed", str(exc)) from None


def _options(request: Request, kind: str) -> dict[str, Any]:
    q = request.query_params
    opts: dict[str, Any] = {}
    if "columns" in q:
        opts["columns"] = [c for c in q["columns"].split(",") if c]
    if q.get("include_outputs") in ("0", "false"):
        opts["include_outputs"] = False
    if kind == "drift":
        method = q.get("method", "auto")
        if method not in _METHODS:
            raise HttpError(400, "bad_parameter", f"method must be one of {', '.join(_METHODS)}")
        opts["method"] = method
        if "drift_share" in q:
            try:
                share = float(q["drift_share"])
            except ValueError:
                share = math.nan
            if not 0.0 <= share <= 1.0:
                raise HttpError(400, "bad_parameter", "drift_share must be a number in [0, 1]")
            opts["drift_share"] = share
    return opts


# ============================================================================ listing
async def health(request: Request) -> Response:
    """Liveness and a few numbers; open without a token (load balancers probe it)."""
    state: CollectorState = request.app.state.collector
    counts = await anyio.to_thread.run_sync(state.store.counts)
    return JSONResponse({
        "status": "ok",
        "uptime_seconds": time.time() - state.metrics.started_at,
        "schema_version": await anyio.to_thread.run_sync(state.store.schema_version),
        "stored": counts,
        "workers": {
            pool.name: {"size": pool.size, "calls": pool.calls, "crashes": pool.crashes, "timeouts": pool.timeouts}
            for pool in (state.ingest_pool, state.query_pool)
        },
        "ingest_in_flight": state.limiter.active,
        "ingest_rejected_overloaded": state.limiter.rejected,
    })


async def services(request: Request) -> Response:
    """Services that sent profiles, with instance and model counts."""
    state = _state(request)
    return JSONResponse({"services": await anyio.to_thread.run_sync(state.store.services)})


async def models(request: Request) -> Response:
    """Models with stored profiles."""
    state = _state(request)
    return JSONResponse({"models": await anyio.to_thread.run_sync(state.store.models)})


async def versions(request: Request) -> Response:
    """Versions of one model."""
    state = _state(request)
    model = request.path_params["model"]
    found = await anyio.to_thread.run_sync(state.store.versions, model)
    if not found:
        raise HttpError(404, "not_found", f"no profiles stored for model {model!r}")
    return JSONResponse({"model": model, "versions": found})


async def features(request: Request) -> Response:
    """Input and output columns seen for one model (optionally one version)."""
    state = _state(request)
    model = request.path_params["model"]
    found = await anyio.to_thread.run_sync(state.store.features, model, request.query_params.get("version"))
    if not found:
        raise HttpError(404, "not_found", f"no features stored for model {model!r}")
    return JSONResponse({"model": model, "features": found})


async def windows(request: Request) -> Response:
    """Windows in a range, merged across series: instances, rows, calls, errors; with
    ``latency=true`` also each window's latency quantiles in seconds (``latency_seconds``: p50, p90,
    p99, max, or null), merged in the query worker, for at most ``max_windows_per_query`` windows."""
    state = _state(request)
    model = request.path_params["model"]
    filters = _filters(request)
    start, end = await _range(request, state, model, filters)
    stats = await state.reader.window_stats(model, start, end, filters)
    merged: dict[float, dict[str, Any]] = {}
    for w in stats:
        m = merged.setdefault(w.window_start, {"window_start": w.window_start, "window_end": w.window_end,
                                               "profiles": 0, "series": 0, "rows": 0, "calls": 0, "errors": 0})
        m["window_end"] = max(m["window_end"], w.window_end)
        m["profiles"] += w.count
        m["series"] += 1
        m["rows"] += w.n_rows
        m["calls"] += w.calls
        m["errors"] += w.errors
    if request.query_params.get("latency") in ("1", "true"):
        await _window_latency(state, model, start, end, filters, merged)
    return JSONResponse({"model": model, "start": start, "end": end, "windows": list(merged.values())})


async def _window_latency(state: CollectorState, model: str, start: float, end: float, filters: Filters,
                          merged: dict[float, dict[str, Any]]) -> None:
    """Each window's ``latency_seconds`` (null when it recorded none), from its merged latency sketches."""
    if len(merged) > state.config.max_windows_per_query:
        raise HttpError(
            400, "too_many_windows",
            f"{len(merged)} windows in range; latency for at most {state.config.max_windows_per_query} per request: narrow the range",
        )
    for m in merged.values():
        m["latency_seconds"] = None
    if merged:
        wins = await state.reader.window_parts(model, start, end, filters)
        for w in await _work(state, "latency_windows", wins):
            if w["window_start"] in merged:
                merged[w["window_start"]]["latency_seconds"] = w["latency_seconds"]


async def alerts(request: Request) -> Response:
    """Firing alerts and recent alert events (newest first), optionally of one ``model``."""
    state = _state(request)
    model = request.query_params.get("model") or None
    limit = _int(request, "limit", 100, 1, 100_000)
    if state.alerts is None:
        return JSONResponse({"configured": False, "firing": [], "events": []})
    return JSONResponse(state.alerts.snapshot(model, limit))


# ============================================================================ analysis
async def _range_parts(request: Request, state: CollectorState) -> tuple[str, Filters, float, float, list[Part]]:
    """The path's model, the filters, the requested range, and the stored parts merging to it (404 when none)."""
    model = request.path_params["model"]
    filters = _filters(request)
    start, end = await _range(request, state, model, filters)
    parts = await state.reader.parts(model, start, end, filters)
    if not parts:
        raise HttpError(404, "not_found", f"no profiles of model {model!r} in [{start:g}, {end:g})")
    return model, filters, start, end, parts


async def profile(request: Request) -> Response:
    """The merged profile of a range: a JSON summary, or the profile bytes with ``format=mlw``."""
    state = _state(request)
    _, _, start, end, parts = await _range_parts(request, state)
    payloads = [p.payload for p in parts]
    if request.query_params.get("format") == "mlw":
        data = payloads[0] if len(payloads) == 1 else await _work(state, "merge", payloads)
        return Response(data, media_type="application/octet-stream")
    summary = await _work(state, "summary", payloads)
    return JSONResponse({"start": start, "end": end, "parts": len(parts), "profile": summary})


async def model_quality(request: Request) -> Response:
    """Model quality from outcomes over a range: overall, per segment and per version."""
    state = _state(request)
    model, _, start, end, parts = await _range_parts(request, state)
    result = await _work(state, "model_quality", [p.payload for p in parts])
    return JSONResponse({"model": model, "start": start, "end": end, "parts": len(parts), **result})


async def _reference(request: Request, state: CollectorState, model: str, start: float, filters: Filters) -> tuple[list[bytes], dict[str, Any]]:
    mode = request.query_params.get("reference", "auto")
    n = _int(request, "reference_windows", state.config.moving_reference_windows, 1, 100_000)
    return await resolve_reference(state.reader, model, start, filters, mode, n)


async def _analysis(request: Request, op: str) -> Response:
    state = _state(request)
    opts = _options(request, op)
    model, filters, start, end, parts = await _range_parts(request, state)
    ref_parts, ref_info = await _reference(request, state, model, start, filters)
    result = await _work(state, op, ref_parts, [p.payload for p in parts], opts)
    return JSONResponse({"model": model, "start": start, "end": end, "reference": ref_info, op: result})


async def drift(request: Request) -> Response:
    """Drift of the merged range against the reference (uploaded, or moving: the N windows before it)."""
    return await _analysis(request, "drift")


async def quality(request: Request) -> Response:
    """Data-quality checks of the merged range against the reference."""
    return await _analysis(request, "quality")


async def _per_window(request: Request, op: str) -> Response:
    state = _state(request)
    model = request.path_params["model"]
    filters = _filters(request)
    opts = _options(request, "drift" if op == "drift_windows" else "quality")
    start, end = await _range(request, state, model, filters)
    wins = await state.reader.window_parts(model, start, end, filters)
    if len(wins) > state.config.max_windows_per_query:
        raise HttpError(
            400, "too_many_windows",
            f"{len(wins)} windows in range; at most {state.config.max_windows_per_query} per request: narrow the range",
        )
    if not wins:
        raise HttpError(404, "not_found", f"no profiles of model {model!r} in [{start:g}, {end:g})")
    ref_parts, ref_info = await _reference(request, state, model, start, filters)
    result = await _work(state, op, ref_parts, wins, opts)
    return JSONResponse({"model": model, "start": start, "end": end, "reference": ref_info, "windows": result})


async def drift_windows(request: Request) -> Response:
    """Drift per window in the range, each against the same reference."""
    return await _per_window(request, "drift_windows")


async def quality_windows(request: Request) -> Response:
    """Data quality per window in the range, each against the same reference."""
    return await _per_window(request, "quality_windows")


# ============================================================================ references
async def put_reference(request: Request) -> Response:
    """Upload a reference profile (the ``.mlw`` bytes as the body); validated in the worker first."""
    state = _state(request)
    model = request.path_params["model"]
    from mlwatch.collector.limits import read_body

    body = await read_body(request.headers, request.stream(), state.config.limits.max_bytes)
    try:
        meta = await state.ingest_pool.call("describe", body)
    except WorkerError as exc:
        raise HttpError(400, "invalid_profile", str(exc)) from None
    except WorkerCrashed as exc:
        raise HttpError(500, "worker_crashed", str(exc)) from None
    ref = ReferenceRow(model, body, time.time(), request.query_params.get("source", "http"), meta)
    await anyio.to_thread.run_sync(state.store.set_reference, ref)
    return JSONResponse({"model": model, "uploaded_at": ref.uploaded_at, "reference": meta}, status_code=201)


async def get_reference(request: Request) -> Response:
    """What the model's uploaded reference is (``format=mlw``: its bytes)."""
    state = _state(request)
    model = request.path_params["model"]
    ref = await anyio.to_thread.run_sync(state.store.get_reference, model)
    if ref is None:
        raise HttpError(404, "no_reference", f"model {model!r} has no uploaded reference")
    if request.query_params.get("format") == "mlw":
        return Response(ref.payload, media_type="application/octet-stream")
    return JSONResponse({"model": model, "uploaded_at": ref.uploaded_at, "source": ref.source, "reference": ref.summary})


async def delete_reference(request: Request) -> Response:
    """Remove the uploaded reference (drift falls back to the moving reference)."""
    state = _state(request)
    model = request.path_params["model"]
    if not await anyio.to_thread.run_sync(state.store.delete_reference, model):
        raise HttpError(404, "no_reference", f"model {model!r} has no uploaded reference")
    return Response(status_code=204)
