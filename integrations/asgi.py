"""Pure ASGI middleware recording request telemetry and model routes, for any ASGI app.

What: `MlwatchASGIMiddleware(app, model_routes={"/predict": "fraud"}, exclude_paths=["/healthz"])`
wraps an ASGI application (Starlette, FastAPI, Quart, Litestar, a bare callable). Per HTTP request
it records the duration until the app returns (the last body chunk sent), the method, the route
template, the status code, the exception type if the app raised, the request and response body
sizes and the requests in flight (see `mlwatch.integrations._http_metrics`). On model routes it
tees the request body as the app reads it (wrapping ``receive``; the app still gets every message
unchanged, whenever and however often it asks) and the JSON response body as it is sent
(wrapping ``send``), up to ``max_body_bytes``, and records a call of the named model.

Why pure ASGI rather than Starlette's ``BaseHTTPMiddleware``: no task per request, no buffering
of streaming responses, no change in how disconnects or exceptions travel; the app sees the same
messages in the same order. Every piece of mlwatch code here runs inside a guard: a failure is
counted in ``mlwatch.health()`` and the request goes on as if mlwatch were not there. The app's
own exceptions pass through untouched (same object, same traceback).

With ``prediction_id_header="X-Prediction-Id"``, a model route's 2xx answer carries its
prediction's id in that header (added to ``http.response.start``; the body is untouched, so
streaming responses still stream), for ``mlwatch.log_outcome(prediction_id=...)``.

The route template is read from ``scope["route"]`` after the app returns (Starlette and FastAPI
set it while routing); pass ``route_of=`` for other frameworks.

Cost: one path for every observed request. What to do with a path (leave it, record the request,
record it and the model route's call) is decided once per path (`MlwatchASGIMiddleware._plan`,
kept for the first `PLAN_CACHE` paths). The app gets a tap (`mlwatch.integrations._tap`) as its
``send``, and on model routes and chunked bodies its ``receive`` too: one object per request notes
the status, counts the bytes and tees the bodies; with `mlwatch._speedups` built it is C, and it
also buffers the request's records itself. Besides it, a request costs two clock reads and the
in-flight counts; parsing, method names, segments and sketches happen on mlwatch's aggregator thread.

Exit: when the ASGI lifespan shuts down, the middleware calls ``mlwatch.flush()`` before passing
on ``lifespan.shutdown.complete``. uvicorn, once it has shut down on SIGTERM, re-raises the signal
with its default action, which ends the process without running ``atexit`` handlers, so
mlwatch's own exit flush never runs there; without this, a uvicorn process's last windows are lost.
An app that does not speak the lifespan protocol (it raises before reading the first lifespan
message, as Django's ASGI handler does) gets it spoken for it here, so that the shutdown still
flushes: the server then sees an app that supports lifespan, with nothing to start or stop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from time import perf_counter_ns
from typing import Any

from mlwatch import _fast
from mlwatch._health import HEALTH
from mlwatch.lifecycle import flush

from ._http_metrics import DEFAULT_MAX_BODY_BYTES, HTTP_MODEL, HttpTelemetry, ModelRoute, PredictionId
from ._tap import HttpTap, PyHttpTap

__all__ = ["ASGIApp", "Message", "MlwatchASGIMiddleware", "PLAN_CACHE", "Receive", "Scope", "Send", "route_from_scope"]

#: Paths whose plan (leave, record, model route) is kept: the first ones seen. Raw paths are the
#: client's to choose, so the cache is bounded; a path beyond it is planned again on every request.
PLAN_CACHE = 4096

# The ASGI types, as starlette/types.py writes them (no framework import needed).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def route_from_scope(scope: Scope) -> str | None:
    """The matched route's template as Starlette/FastAPI leave it in the scope, else None."""
    route = scope.get("route")
    if route is None:
        return None
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


def _with_id(message: Message, name: bytes, pid: str | None) -> Message:
    """``http.response.start`` with the prediction-id header added (a copy; unchanged when there is
    no id or the app set that header itself)."""
    if pid is None:
        return message
    headers = list(message.get("headers", ()))
    if any(k.lower() == name for k, _ in headers):
        return message
    headers.append((name, pid.encode("ascii")))
    return {**message, "headers": headers}


class MlwatchASGIMiddleware:
    """Records every HTTP request (and model routes' JSON bodies) of the wrapped ASGI app.

    Options are those of `HttpTelemetry` (checked here: a wrong one raises `mlwatch.ConfigError`),
    plus `route_of(scope)`, which returns the route template once the app has run, and
    `flush_on_shutdown`: export the open windows when the ASGI lifespan shuts down.
    `prediction_id_header`: send each model-route prediction's id in this response header.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        model_routes: Mapping[str, str | Mapping[str, Any]] | None = None,
        exclude_paths: Iterable[str] = (),
        http_model: str | None = HTTP_MODEL,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        route_of: Callable[[Scope], str | None] = route_from_scope,
        flush_on_shutdown: bool = True,
        prediction_id_header: str | None = None,
    ) -> None:
        self.app = app
        self.flush_on_shutdown = flush_on_shutdown
        self.telemetry = HttpTelemetry(
            model_routes=model_routes, exclude_paths=exclude_paths, http_model=http_model, max_body_bytes=max_body_bytes,
            prediction_id_header=prediction_id_header,
        )
        self.route_of = route_of
        self.active_requests = 0
        self._plans: dict[str, ModelRoute | bool] = {}  # what to do with a path's requests (see `_plan`)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        telemetry = self.telemetry
        kind = None
        plan: ModelRoute | bool = False
        try:
            kind = scope["type"]
            if kind == "http":
                path = scope["path"]
                cached = self._plans.get(path)
                plan = cached if cached is not None else self._plan(path)
        except Exception as exc:
            HEALTH.count_error("http_middleware", exc)
            plan = False
        if plan is False:
            if kind == "lifespan" and self.flush_on_shutdown:
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return

        model: ModelRoute | None = None
        ids: PredictionId | None = None
        if plan is not True:  # a model route
            try:
                if telemetry.id_header is None:
                    model = None if plan.deferred() else plan
                else:
                    model, ids = telemetry.for_route(plan)
            except Exception as exc:  # the request is still recorded
                HEALTH.count_error("http_middleware", exc)
        try:
            if model is None and ids is None and telemetry.record is None:  # nothing to record
                plan = False
            else:
                speedups = _fast.SPEEDUPS
                headers = scope["headers"]
                cap = telemetry.max_body_bytes if model is not None else -1
                tap = speedups.http_tap(send, receive, headers, cap) if speedups is not None else PyHttpTap(send, receive, headers, cap)
        except Exception as exc:
            HEALTH.count_error("http_middleware", exc)
            plan = False
        if plan is False:
            await self.app(scope, receive, send)
            return

        app_receive = tap.receive if model is not None or tap.counting else receive  # the tap sees the body as the app reads it
        in_flight = telemetry.in_flight
        key = ("", "")
        try:
            key = (scope["method"], scope.get("scheme") or "http")
            n = in_flight.get(key)
            if n is not None:  # telemetry.arrive, inline for a known key
                in_flight[key] = n + 1
            else:
                key = telemetry.arrive(*key)
        except Exception as exc:
            HEALTH.count_error("http_middleware", exc)
        self.active_requests += 1
        active = self.active_requests
        error: BaseException | None = None
        app_send: Send = tap
        ids_token = None
        if ids is not None:
            app_send = _id_sender(tap, send, ids, telemetry.id_header_bytes)
            ids_token = ids.enter()
        t0 = perf_counter_ns()
        try:
            await self.app(scope, app_receive, app_send)
        except BaseException as exc:
            error = exc
            raise
        finally:
            duration = perf_counter_ns() - t0
            self.active_requests -= 1
            if ids is not None:
                ids.leave(ids_token)
            try:
                in_flight[key] -= 1
                # the C tap reads the route template as route_from_scope does
                if not (self.route_of is route_from_scope and tap.finish(telemetry.sink, model.sink if model is not None else None, t0, duration, error, scope, key[0], key[1], active)):
                    self._record(tap, model, t0, duration, error, scope, key, active)
            except Exception as exc:
                HEALTH.count_error("http_middleware", exc)

    def _record(
        self, tap: HttpTap, model: ModelRoute | None, t0: int, duration: int, error: BaseException | None, scope: Scope, key: tuple[str, str], active: int
    ) -> None:
        """The request's records, through the recorders' Python functions (`HttpTap.finish` buffers the common case in C)."""
        telemetry = self.telemetry
        status = tap.status
        error_type = None
        if error is not None:  # the server answers 500 to an exception raised before the response started
            status, error_type = status or 500, type(error).__name__
        if tap.error is not None:
            HEALTH.count_error("http_middleware", tap.error)
        record = telemetry.record
        if record is not None:
            record(t0, duration, key[0], self.route_of(scope), status, error_type, tap.request_size, tap.response_size, active, key[1])
        if model is not None:
            request_body, response_body, over = tap.bodies()
            if over:
                HEALTH.count_dropped("http_body_too_large", over)
            telemetry.record_model(model, t0, duration, status, request_body, response_body, error_type)

    def _plan(self, path: str) -> ModelRoute | bool:
        """What to do with requests to `path`: leave them alone (False), record the request (True),
        or record it and the model route's call (its `ModelRoute`). Kept for the first paths seen."""
        telemetry = self.telemetry
        hit = telemetry.models.match(path) if telemetry.models else None
        plan: ModelRoute | bool = False
        if not telemetry.excluded(path):
            plan = hit[1] if hit is not None else telemetry.record is not None
        if len(self._plans) < PLAN_CACHE:
            self._plans[path] = plan
        return plan

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The lifespan scope: passed to the app with a flushing ``send``; spoken for an app that does not speak it."""
        asked = False

        async def app_receive() -> Message:
            nonlocal asked
            asked = True
            return await receive()

        try:
            await self.app(scope, app_receive, self._flushing_send(send))
        except Exception:
            if asked:  # the app took part in the protocol and then failed: the server must see it
                raise
            await self._own_lifespan(receive, send)

    async def _own_lifespan(self, receive: Receive, send: Send) -> None:
        """Lifespan for an app without it: startup completes at once; shutdown flushes mlwatch first."""
        flushing_send = self._flushing_send(send)
        while True:
            message = await receive()
            kind = message.get("type")
            if kind == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif kind == "lifespan.shutdown":
                await flushing_send({"type": "lifespan.shutdown.complete"})
                return

    def _flushing_send(self, send: Send) -> Send:
        """Lifespan ``send`` that flushes mlwatch just before the app reports its shutdown complete.

        Servers may end the process without running ``atexit`` (uvicorn re-raises the SIGTERM it
        caught once it has shut down), so the last windows leave here, within mlwatch's
        ``shutdown_timeout``, while the server waits for the app.
        """

        async def lifespan_send(message: Message) -> None:
            if message.get("type") == "lifespan.shutdown.complete":
                try:
                    flush()
                except Exception as exc:
                    HEALTH.count_error("http_flush", exc)
            await send(message)

        return lifespan_send


def _id_sender(tap: HttpTap, send: Send, ids: PredictionId, header: bytes) -> Send:
    """The app's ``send`` when the response carries its prediction id: the tap notes each message,
    the id goes into ``http.response.start``, and the prediction settles before the last body chunk."""

    def send_with_id(message: Message) -> Awaitable[None]:
        tap.note(message)  # never raises
        try:
            kind = message["type"]
            if kind == "http.response.body":
                if not message.get("more_body", False):
                    ids.settle()  # before the last chunk leaves: a label cannot arrive sooner
            elif kind == "http.response.start":
                message = _with_id(message, header, ids.value(tap.status, tap.json, tap.peek_request, tap.peek_response))
        except Exception as exc:
            HEALTH.count_error("http_middleware", exc)
        return send(message)

    return send_with_id
