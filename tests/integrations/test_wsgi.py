"""The WSGI middleware and the Flask module, in-process: what is recorded, and that the app behaves the same."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

pytest.importorskip("flask")
from http_apps.flask_app import MODEL_ROUTES, create_app

import mlwatch
from mlwatch import ConfigError, Profile
from mlwatch.integrations.flask import instrument_app
from mlwatch.integrations.wsgi import MlwatchWSGIMiddleware, StartResponse, WSGIEnvironment
from mlwatch.testing import Capture, capture

REQUESTS: list[dict[str, Any]] = [
    {"method": "GET", "path": "/items/3"},
    {"method": "GET", "path": "/sleep/4?sleep_ms=1"},
    {"method": "POST", "path": "/predict", "json": {"amount": 70.0, "country": "DE"}},
    {"method": "POST", "path": "/predict", "data": b"{not json", "content_type": "application/json"},
    {"method": "POST", "path": "/score/a", "json": {"amount": 4.0}},
    {"method": "POST", "path": "/echo_twice", "json": {"x": 1, "y": [1, 2]}},
    {"method": "GET", "path": "/stream?n=4"},
    {"method": "GET", "path": "/boom"},
    {"method": "GET", "path": "/status/404"},
    {"method": "GET", "path": "/status/503"},
    {"method": "GET", "path": "/nowhere"},
    {"method": "GET", "path": "/healthz"},
]


def _send_all(app: Any, requests: list[dict[str, Any]]) -> list[tuple[int, list[tuple[str, str]], bytes]]:
    """Each request through Flask's test client (response read and closed): (status, headers, body)."""
    client = app.test_client()
    out = []
    for req in requests:
        r = client.open(req["path"], method=req["method"], **{k: v for k, v in req.items() if k not in ("path", "method")})
        out.append((r.status_code, sorted(r.headers.items()), r.get_data()))
        r.close()
    return out


def _http(cap: Capture) -> dict[tuple[str, str, str], Profile]:
    out: dict[tuple[str, str, str], Profile] = {}
    for p in cap.profiles("http.server"):
        s = p.segment
        key = (s["http.request.method"], s["http.route"], s["http.response.status_code"])
        out[key] = out[key].merge(p) if key in out else p
    return out


def test_responses_are_unchanged() -> None:
    """Every kind of request (errors, streaming, body read twice, bad JSON) gets the same answer with and without mlwatch."""
    with capture():
        plain = _send_all(create_app(instrument=False), REQUESTS)
        watched = _send_all(create_app(), REQUESTS)
    assert watched == plain
    assert [s for s, _, _ in plain] == [200, 200, 200, 400, 200, 200, 200, 500, 404, 503, 404, 200]


def test_request_telemetry_by_route_rule() -> None:
    """Duration, sizes, handled exceptions and statuses are recorded per Flask rule; health checks are not."""
    with capture() as cap:
        _send_all(create_app(), REQUESTS)
        http = _http(cap)
    assert set(http) == {
        ("GET", "/items/<int:item_id>", "200"), ("GET", "/sleep/<int:item_id>", "200"), ("POST", "/predict", "200"),
        ("POST", "/predict", "400"), ("POST", "/score/<kind>", "200"), ("POST", "/echo_twice", "200"),
        ("GET", "/stream", "200"), ("GET", "/boom", "500"), ("GET", "/status/<int:code>", "404"),
        ("GET", "/status/<int:code>", "503"), ("GET", "__missing__", "404"),
    }
    assert http[("GET", "/boom", "500")].errors == {"RuntimeError": 1}
    stream = http[("GET", "/stream", "200")].columns["http.response.body.size"].numeric
    assert stream is not None and stream.max == len(b"".join(f"chunk {i}\n".encode() for i in range(4)))
    predict = http[("POST", "/predict", "200")].columns["http.request.body.size"].numeric
    assert predict is not None and predict.max == len(b'{"amount": 70.0, "country": "DE"}')


def test_model_route_inputs_outputs_and_double_counting() -> None:
    """The JSON body and answer of a model route become features and outputs; @monitor on the handler is counted once."""
    with capture() as cap:
        _send_all(create_app(), [
            {"method": "POST", "path": "/predict", "json": {"amount": 70.0, "country": "DE"}},
            {"method": "POST", "path": "/predict", "json": {"amount": 5.0, "country": "FR"}},
            {"method": "POST", "path": "/predict", "data": b"{bad", "content_type": "application/json"},
            *[{"method": "POST", "path": f"/score/k{i}", "json": {"amount": 1.0}} for i in range(3)],
        ])
        fraud = cap.merged("fraud")
        scorer = cap.merged("scorer")
    assert fraud.calls == 2  # the malformed body was answered 400: no model ran
    assert fraud.columns["country"].category_counts() == {"DE": 1, "FR": 1}
    assert fraud.outputs["label"].category_counts() == {"fraud": 1, "ok": 1}
    assert scorer.calls == 3


def _raw_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """Reads its body in pieces (read(n), readline, iteration) and echoes it as JSON, in chunks."""
    stream = environ["wsgi.input"]
    head = stream.read(3)
    line = stream.readline()
    rest = b"".join(stream)
    body = head + line + rest
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"got": ', str(len(body)).encode(), b"}"]


def _call(app: Any, body: bytes, path: str = "/raw") -> tuple[str, bytes]:
    status: list[str] = []

    def start_response(s: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status.append(s)
        return lambda data: None

    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": path, "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body), "CONTENT_TYPE": "application/json",
    }
    result = app(environ, start_response)
    try:
        data = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return status[0], data


def test_input_tee_gives_the_app_the_same_bytes() -> None:
    """An app reading wsgi.input in pieces gets exactly the bytes it would get unwrapped; the body is captured too."""
    body = b'{"x": 1.5,\n"y": "a"}\n'
    with capture() as cap:
        plain = _call(_raw_app, body)
        watched = _call(MlwatchWSGIMiddleware(_raw_app, model_routes={"/raw": "raw"}, route_of=lambda environ: "/raw"), body)
        raw = cap.merged("raw")
    assert watched == plain == ("200 OK", b'{"got": 21}')
    assert raw.columns["x"].count == 1 and raw.columns["y"].category_counts() == {"a": 1}
    assert raw.outputs["got"].count == 1


def test_generator_response_recorded_once_when_closed_and_errors_pass_through() -> None:
    """A streamed response is recorded once; an error raised mid-stream reaches the server unchanged and is recorded."""
    closed: list[bool] = []

    class Body:
        def __init__(self, fail: bool) -> None:
            self.fail = fail

        def __iter__(self) -> Iterator[bytes]:
            yield b"one"
            if self.fail:
                raise ValueError("mid-stream")
            yield b"two"

        def close(self) -> None:
            closed.append(True)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body(environ["PATH_INFO"] == "/fail")

    wrapped = MlwatchWSGIMiddleware(app, http_model="wsgi.stream")
    with capture() as cap:
        assert _call(wrapped, b"", "/ok") == ("200 OK", b"onetwo")
        with pytest.raises(ValueError, match="mid-stream"):
            _call(wrapped, b"", "/fail")
        profiles = cap.profiles("wsgi.stream")
    assert closed == [True, True]
    merged = mlwatch.merge(profiles)
    assert merged.calls == 2 and merged.errors == {"ValueError": 1}


def test_app_exception_passes_through_untouched() -> None:
    """An exception raised by the WSGI app reaches the server as the same object and is recorded as a 500."""
    error = LookupError("mine")

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        raise error

    with capture() as cap:
        with pytest.raises(LookupError) as info:
            _call(MlwatchWSGIMiddleware(app, http_model="wsgi.raise"), b"")
        p = cap.merged("wsgi.raise")
    assert info.value is error and p.errors == {"LookupError": 1} and p.segment["http.response.status_code"] == "500"


def test_file_wrapper_responses_keep_the_server_path() -> None:
    """A wsgi.file_wrapper response is returned as is (sendfile stays possible) and still recorded."""

    class FileWrapper:
        def __init__(self, f: Any, blksize: int = 8192) -> None:
            self.f = f

        def __iter__(self) -> Iterator[bytes]:
            return iter([self.f.read()])

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Length", "3")])
        wrapper: Iterable[bytes] = environ["wsgi.file_wrapper"](io.BytesIO(b"abc"))
        return wrapper

    with capture() as cap:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/f", "wsgi.input": io.BytesIO(b""), "wsgi.file_wrapper": FileWrapper}
        result = MlwatchWSGIMiddleware(app, http_model="wsgi.file")(environ, lambda s, h, e=None: lambda d: None)
        assert isinstance(result, FileWrapper)
        assert cap.merged("wsgi.file").calls == 1


def test_mlwatch_failures_never_reach_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """When mlwatch's own code fails inside a request, the answer is unchanged and the failure is counted."""
    app = create_app()
    middleware = app.wsgi_app
    assert isinstance(middleware, MlwatchWSGIMiddleware)
    before = mlwatch.health()["internal_errors"].get("http_middleware", 0)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("mlwatch bug")

    monkeypatch.setattr(middleware.telemetry, "record", broken)
    monkeypatch.setattr(middleware, "_start", broken)
    with capture():
        got = _send_all(app, [{"method": "GET", "path": "/items/1"}, {"method": "POST", "path": "/predict", "json": {"amount": 1.0}}])
    assert [(s, b) for s, _, b in got] == [(200, b'{"id":1}\n'), (200, b'{"label":"ok","score":0.01}\n')]
    assert mlwatch.health()["internal_errors"].get("http_middleware", 0) - before == 2


def test_instrument_app_is_idempotent_and_validates() -> None:
    """A second instrument_app returns the first middleware; wrong options or a non-Flask app raise ConfigError."""
    app = create_app(instrument=False)
    first = instrument_app(app, model_routes=MODEL_ROUTES)
    assert instrument_app(app) is first and app.wsgi_app is first
    with pytest.raises(ConfigError):
        instrument_app(create_app(instrument=False), model_routes={"/p": 3})  # type: ignore[dict-item]
    with pytest.raises(ConfigError):
        instrument_app(object())  # type: ignore[arg-type]
