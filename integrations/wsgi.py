"""Pure WSGI middleware recording request telemetry and model routes, for any WSGI app.

What: `MlwatchWSGIMiddleware(app, model_routes={"/predict": "fraud"}, exclude_paths=["/healthz"])`
wraps a WSGI application (Flask, Django, Falcon, a bare callable). Per request it records the
duration until the server has taken the last chunk of the response (or closed it), the method, the route
template, the status code, the exception type if the app raised, the request and response body
sizes and the requests in flight (see `mlwatch.integrations._http_metrics`). On model routes it
tees ``wsgi.input`` as the app reads it (a bounded copy; the app reads exactly the bytes it would
have read) and the JSON response as the server iterates it, and records a call of the named model.

Why pure WSGI: works under every server (gunicorn, uWSGI, waitress, werkzeug) and framework; the
response iterable is wrapped, not buffered, so streaming responses stream. Every piece of mlwatch
code here runs inside a guard: a failure is counted in ``mlwatch.health()`` and the request goes
on as if mlwatch were not there. The app's own exceptions pass through untouched.

With ``prediction_id_header="X-Prediction-Id"``, a model route's 2xx answer carries its
prediction's id in that header (added in ``start_response``; the body is untouched), for
``mlwatch.log_outcome(prediction_id=...)``.

The route template and a handled exception are read from the WSGI environ after the app ran:
``environ["mlwatch.route"]`` and ``environ["mlwatch.exception"]``, which framework modules set
(`mlwatch.integrations.flask` does it from Flask's ``url_rule`` and ``got_request_exception``);
pass ``route_of=`` to read them some other way. A response that is the server's
``wsgi.file_wrapper`` is recorded when the app returns, so the server's sendfile path is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from time import perf_counter_ns
from types import TracebackType
from typing import Any, Protocol

from mlwatch._health import HEALTH

from ._body import BodyBuffer
from ._http_metrics import DEFAULT_MAX_BODY_BYTES, HTTP_MODEL, HttpTelemetry, ModelRoute, PredictionId

__all__ = ["ENVIRON_EXCEPTION", "ENVIRON_ROUTE", "MlwatchWSGIMiddleware", "StartResponse", "WSGIApp", "WSGIEnvironment", "route_from_environ"]

#: Where framework glue leaves the matched route template and a handled exception.
ENVIRON_ROUTE = "mlwatch.route"
ENVIRON_EXCEPTION = "mlwatch.exception"

WSGIEnvironment = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


class StartResponse(Protocol):
    """The server's ``start_response`` callable (PEP 3333)."""

    def __call__(self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = ..., /) -> Callable[[bytes], object]: ...


WSGIApp = Callable[[WSGIEnvironment, StartResponse], Iterable[bytes]]


def route_from_environ(environ: WSGIEnvironment) -> str | None:
    """The route template framework glue stored in the environ, else None."""
    route = environ.get(ENVIRON_ROUTE)
    return route if isinstance(route, str) else None


class _InputTee:
    """``wsgi.input`` that copies what the app reads into a bounded buffer (and counts it)."""

    def __init__(self, stream: Any, buffer: BodyBuffer) -> None:
        self._stream = stream
        self._buffer = buffer
        self.size = 0

    def _keep(self, data: bytes) -> bytes:
        try:
            self.size += len(data)
            self._buffer.add(data)
        except Exception as exc:
            HEALTH.count_error("http_middleware", exc)
        return data

    def read(self, size: int = -1, /) -> bytes:
        return self._keep(self._stream.read() if size is None or size < 0 else self._stream.read(size))

    def readinto(self, buffer: bytearray | memoryview, /) -> int:
        readinto = getattr(self._stream, "readinto", None)
        if readinto is None:
            data = self._stream.read(len(buffer))
            buffer[: len(data)] = data
            n = len(data)
        else:
            n = readinto(buffer) or 0
        if n:
            self._keep(bytes(memoryview(buffer)[:n]))
        return n

    def readline(self, size: int = -1, /) -> bytes:
        return self._keep(self._stream.readline() if size is None or size < 0 else self._stream.readline(size))

    def readlines(self, hint: int = -1, /) -> list[bytes]:
        lines: list[bytes] = self._stream.readlines() if hint is None or hint < 0 else self._stream.readlines(hint)
        for line in lines:
            self._keep(line)
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Request:
    """What one request has seen so far; finished once, by whichever of close() or an error comes first."""

    __slots__ = (
        "active", "environ", "error", "finished", "ids", "input", "json", "key", "middleware", "model",
        "request_size", "response_body", "response_size", "server_write", "status", "t0",
    )

    def __init__(
        self, middleware: MlwatchWSGIMiddleware, environ: WSGIEnvironment, model: ModelRoute | None, request_size: int | None,
        ids: PredictionId | None = None,
    ) -> None:
        self.middleware = middleware
        self.environ = environ
        self.model = model
        self.ids = ids
        self.request_size = request_size
        self.input: _InputTee | None = None
        self.status = 0
        self.json = False
        self.response_body: BodyBuffer | None = None
        self.response_size = 0
        self.error: BaseException | None = None
        self.finished = False
        self.active = 0
        self.key = ("", "")
        self.t0 = 0
        self.server_write: Callable[[bytes], object] | None = None

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None, start_response: StartResponse) -> Callable[[bytes], object]:
        try:
            self.status = int(status[:3])
            if self.model is not None:
                self.json = any(k.lower() == "content-type" and "json" in v.lower() for k, v in headers)
                if self.json:
                    self.response_body = BodyBuffer(self.middleware.telemetry.max_body_bytes)
            if self.ids is not None:
                headers = self._with_id(headers)
        except Exception as exc:
            HEALTH.count_error("http_middleware", exc)
        self.server_write = start_response(status, headers) if exc_info is None else start_response(status, headers, exc_info)
        return self.write

    def _with_id(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The headers with the prediction id added (a new list; unchanged when there is no id or the app set that header)."""
        assert self.ids is not None
        name = self.middleware.telemetry.id_header or ""
        request_body = self.input._buffer if self.input is not None else None
        response_body = self.response_body
        pid = self.ids.value(
            self.status, self.json, request_body.peek if request_body is not None else None, response_body.peek if response_body is not None else None
        )
        if pid is None or any(k.lower() == name.lower() for k, _ in headers):
            return headers
        return [*headers, (name, pid)]

    def write(self, data: bytes) -> object:
        """The legacy ``write()`` callable ``start_response`` returns, counted like iterated chunks."""
        self.chunk(data)
        assert self.server_write is not None  # start_response set it before handing this out
        return self.server_write(data)

    def chunk(self, data: bytes) -> None:
        try:
            self.response_size += len(data)
            if self.response_body is not None:
                self.response_body.add(data)
        except Exception as exc:
            HEALTH.count_error("http_middleware", exc)

    def finish(self, error: BaseException | None = None) -> None:
        if self.finished:
            return
        self.finished = True
        duration = perf_counter_ns() - self.t0
        mw = self.middleware
        mw._leave(self.key)
        if self.ids is not None:
            self.ids.settle()
        try:
            environ = self.environ
            error = error or self.error or environ.get(ENVIRON_EXCEPTION)
            status = self.status or (500 if error is not None else 0)
            request_size = self.request_size
            if self.input is not None and request_size is None:
                request_size = self.input.size
            telemetry = mw.telemetry
            error_type = None if error is None else type(error).__name__
            record = telemetry.record
            if record is not None:
                record(self.t0, duration, self.key[0], mw.route_of(environ), status, error_type, request_size, self.response_size, self.active, self.key[1])
            if self.model is not None:
                telemetry.record_model(
                    self.model, self.t0, duration, status,
                    self.input._buffer.raw() if self.input is not None else None,
                    self.response_body.raw() if self.response_body is not None else None,
                    error_type,
                )
        except Exception as exc:
            HEALTH.count_error("http_middleware", exc)


class _Response:
    """The app's response iterable, counted (and teed on model routes) as the server iterates it."""

    def __init__(self, result: Iterable[bytes], request: _Request) -> None:
        self._result = result
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        request = self._request
        try:
            for data in self._result:
                request.chunk(data)
                yield data
        except GeneratorExit:  # the server closed the response early (the client hung up): no error of the app's
            raise
        except BaseException as exc:
            request.error = exc
            raise
        request.finish()  # every chunk was handed to the server (close() may come much later, or never in test clients)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            self._request.finish(exc)
            raise
        self._request.finish()


class MlwatchWSGIMiddleware:
    """Records every request (and model routes' JSON bodies) of the wrapped WSGI app.

    Options are those of `HttpTelemetry` (checked here: a wrong one raises `mlwatch.ConfigError`),
    plus `route_of(environ)`, which returns the route template once the app has run.
    `prediction_id_header`: send each model-route prediction's id in this response header.
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        model_routes: Mapping[str, str | Mapping[str, Any]] | None = None,
        exclude_paths: Iterable[str] = (),
        http_model: str | None = HTTP_MODEL,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        route_of: Callable[[WSGIEnvironment], str | None] = route_from_environ,
        prediction_id_header: str | None = None,
    ) -> None:
        self.app = app
        self.telemetry = HttpTelemetry(
            model_routes=model_routes, exclude_paths=exclude_paths, http_model=http_model, max_body_bytes=max_body_bytes,
            prediction_id_header=prediction_id_header,
        )
        self.route_of = route_of
        self.active_requests = 0
        self._lock = self.telemetry.lock
        self._skip_exact = self.telemetry.excluded.exact  # the excluded paths, read inline on every request
        self._skip_prefixes = self.telemetry.excluded.prefixes

    def _enter(self, environ: WSGIEnvironment) -> tuple[int, tuple[str, str]]:
        """A request arrives: (requests in flight with it, its in-flight key (method, scheme))."""
        method, scheme = environ.get("REQUEST_METHOD", ""), environ.get("wsgi.url_scheme") or "http"
        with self._lock:
            key = self.telemetry.arrive(method, scheme)
            self.active_requests += 1
            return self.active_requests, key

    def _leave(self, key: tuple[str, str]) -> None:
        with self._lock:
            self.active_requests -= 1
            in_flight = self.telemetry.in_flight
            if key in in_flight:
                in_flight[key] -= 1

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            request = self._start(environ)
        except Exception as exc:
            HEALTH.count_error("http_middleware", exc)
            request = None
        if request is None:
            return self.app(environ, start_response)

        def wrapped_start_response(status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None, /) -> Callable[[bytes], object]:
            return request.start_response(status, headers, exc_info, start_response)

        request.active, request.key = self._enter(environ)
        ids_token = request.ids.enter() if request.ids is not None else None
        request.t0 = perf_counter_ns()
        try:
            result = self.app(environ, wrapped_start_response)
        except BaseException as exc:
            request.finish(exc)
            raise
        finally:
            if request.ids is not None:
                request.ids.leave(ids_token)
        file_wrapper = environ.get("wsgi.file_wrapper")
        if file_wrapper is not None and isinstance(file_wrapper, type) and isinstance(result, file_wrapper):
            request.finish()  # keep the server's sendfile path: record now, without counting the bytes
            return result
        return _Response(result, request)

    def _start(self, environ: WSGIEnvironment) -> _Request | None:
        path = environ.get("PATH_INFO", "")
        telemetry = self.telemetry
        if path in self._skip_exact or (self._skip_prefixes and path.startswith(self._skip_prefixes)):
            return None
        length = environ.get("CONTENT_LENGTH")
        request_size: int | None = int(length) if length and length.isdigit() else 0
        if not length and environ.get("HTTP_TRANSFER_ENCODING"):
            request_size = None  # chunked: counted as the app reads it (model routes only)
        models = telemetry.models
        model, ids = telemetry.routes(path) if path in models.exact or models.patterns else (None, None)
        request = _Request(self, environ, model, request_size, ids)
        if model is not None and "wsgi.input" in environ:
            request.input = _InputTee(environ["wsgi.input"], BodyBuffer(telemetry.max_body_bytes))
            environ["wsgi.input"] = request.input
        return request
