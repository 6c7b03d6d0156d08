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

Cost: a request on no model route takes the lean path (`MlwatchASGIMiddleware.__call__`): one
``send`` wrapper noting the status and counting the bytes sent, two clock reads, the in-flight
counts, and one flat tuple appended to a bounded buffer; everything else (method names, segments,
sketches) happens on mlwatch's aggregator thread. Model routes, prediction ids and chunked request
bodies take the full path (`_observe`), which also tees the bodies.

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

from mlwatch._health import HEALTH
from mlwatch.lifecycle import flush

from ._body import BodyBuffer
from ._http_metrics import DEFAULT_MAX_BODY_BYTES, HTTP_MODEL, HttpTelemetry, ModelRoute, PredictionId

__all__ = ["ASGIApp", "Message", "MlwatchASGIMiddleware", "Receive", "Scope", "Send", "route_from_scope"]

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


def _is_json(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type" or name.lower() == b"content-type":
            # find(), not `in`: bytes.__contains__ first tries its argument as an int, and the
            # TypeError it raises and clears costs more than the whole search
            return value.lower().find(b"json") != -1
    return False


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
        self._skip_exact = self.telemetry.excluded.exact  # the excluded paths, read inline on every request
        self._skip_prefixes = self.telemetry.excluded.prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        telemetry = self.telemetry
        kind = ""
        observe = full = False
        model: ModelRoute | None = None
        ids: PredictionId | None = None
        request_size: int | None = 0
        try:
            kind = scope["type"]
            path = scope["path"] if kind == "http" else ""
            if kind == "http" and path not in self._skip_exact and not (self._skip_prefixes and path.startswith(self._skip_prefixes)):
                observe = True
                models = telemetry.models
                if path in models.exact or models.patterns:  # maybe a model route
                    model, ids = telemetry.routes(path)
                    full = model is not None or ids is not None
                for name, value in scope["headers"]:
                    if name == b"content-length":
                        request_size = int(value) if value.isdigit() else None
                        break
                    if name == b"transfer-encoding":
                        full = True  # a chunked body: its size is counted as the app reads it
                observe = full or telemetry.record is not None
        except Exception as exc:
            HEALTH.count_error("http_middleware", exc)
            request_size = None
        if not observe:
            if kind == "lifespan" and self.flush_on_shutdown:
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        if full:
            await self._observe(scope, receive, send, model, ids, request_size)
            return

        # The lean path: the status and the bytes sent, the time the app took, one buffered record.
        status = 0
        response_size = 0

        def send_wrapper(message: Message) -> Awaitable[None]:
            """Notes the status and counts the body bytes, then hands the server's own awaitable back (no coroutine of ours)."""
            nonlocal status, response_size
            try:
                kind = message["type"]
                if kind == "http.response.body":
                    response_size += len(message.get("body", b""))
                elif kind == "http.response.start":
                    status = message["status"]
            except Exception as exc:
                HEALTH.count_error("http_middleware", exc)
            return send(message)

        in_flight = telemetry.in_flight
        key = ("", "")
        try:
            key = telemetry.arrive(scope["method"], scope.get("scheme") or "http")
        except Exception as exc:
            HEALTH.count_error("http_middleware", exc)
        self.active_requests += 1
        active = self.active_requests
        error: BaseException | None = None
        t0 = perf_counter_ns()
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            error = exc
            raise
        finally:
            duration = perf_counter_ns() - t0
            self.active_requests -= 1
            try:
                in_flight[key] -= 1
                record = telemetry.record
                if record is not None:
                    error_type = None
                    if error is not None:  # the server answers 500 to an exception raised before the response started
                        status, error_type = status or 500, type(error).__name__
                    record(t0, duration, key[0], self.route_of(scope), status, error_type, request_size, response_size, active, key[1])
            except Exception as exc:
                HEALTH.count_error("http_middleware", exc)

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

    async def _observe(
        self, scope: Scope, receive: Receive, send: Send, model: ModelRoute | None, ids: PredictionId | None, request_size: int | None
    ) -> None:
        """The full path: a model route (its bodies teed), a prediction id to send, or a chunked request body to count."""
        telemetry = self.telemetry
        status = 0
        response_size = 0
        request_body: BodyBuffer | None = None
        response_body: BodyBuffer | None = None
        json_response = False
        count_request = False
        try:
            if request_size == 0:
                count_request = any(name == b"transfer-encoding" for name, _ in scope["headers"])
            if model is not None:
                request_body = BodyBuffer(telemetry.max_body_bytes)
        except Exception as exc:
            HEALTH.count_error("http_middleware", exc)
            request_size = None

        def send_wrapper(message: Message) -> Awaitable[None]:
            nonlocal status, response_size, json_response, response_body
            try:
                kind = message["type"]
                if kind == "http.response.body":
                    body = message.get("body", b"")
                    response_size += len(body)
                    if json_response and response_body is not None:
                        response_body.add(body)
                    if ids is not None and not message.get("more_body", False):
                        ids.settle()  # before the last chunk leaves: a label cannot arrive sooner
                elif kind == "http.response.start":
                    status = message["status"]
                    if model is not None and _is_json(message.get("headers", ())):
                        json_response = True
                        response_body = BodyBuffer(telemetry.max_body_bytes)
                    if ids is not None:
                        message = _with_id(message, telemetry.id_header_bytes, ids.value(status, json_response, request_body, response_body))
            except Exception as exc:
                HEALTH.count_error("http_middleware", exc)
            return send(message)

        app_receive = receive
        if request_body is not None or count_request:

            async def receive_wrapper() -> Message:
                nonlocal request_size
                message = await receive()
                try:
                    if message["type"] == "http.request":
                        body = message.get("body", b"")
                        if count_request and request_size is not None:
                            request_size += len(body)
                        if request_body is not None:
                            request_body.add(body)
                except Exception as exc:
                    HEALTH.count_error("http_middleware", exc)
                return message

            app_receive = receive_wrapper

        in_flight = telemetry.in_flight
        key = ("", "")
        try:
            key = telemetry.arrive(scope["method"], scope.get("scheme") or "http")
        except Exception as exc:
            HEALTH.count_error("http_middleware", exc)
        self.active_requests += 1
        active = self.active_requests
        error: BaseException | None = None
        ids_token = ids.enter() if ids is not None else None
        t0 = perf_counter_ns()
        try:
            await self.app(scope, app_receive, send_wrapper)
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
                if status == 0 and error is not None:
                    status = 500  # the server answers 500 to an exception raised before the response started
                error_type = None if error is None else type(error).__name__
                record = telemetry.record
                if record is not None:
                    record(t0, duration, key[0], self.route_of(scope), status, error_type, request_size, response_size, active, key[1])
                if model is not None:
                    telemetry.record_model(
                        model, t0, duration, status,
                        request_body.raw() if request_body is not None else None,
                        response_body.raw() if response_body is not None else None,
                        error_type,
                    )
            except Exception as exc:
                HEALTH.count_error("http_middleware", exc)
