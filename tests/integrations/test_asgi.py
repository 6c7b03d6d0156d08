"""The ASGI middleware and the FastAPI module, in-process: what is recorded, and that the app behaves the same."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("fastapi")
import httpx
from fastapi import FastAPI, HTTPException, Request
from http_apps.fastapi_app import MODEL_ROUTES, create_app

import mlwatch
from mlwatch import ConfigError, Profile
from mlwatch.integrations._http_metrics import ModelRoute
from mlwatch.integrations.asgi import Message, MlwatchASGIMiddleware, Receive, Scope, Send
from mlwatch.integrations.fastapi import instrument_app
from mlwatch.testing import Capture, capture

REQUESTS: list[dict[str, Any]] = [
    {"method": "GET", "url": "/items/3"},
    {"method": "GET", "url": "/async/4?sleep_ms=1"},
    {"method": "POST", "url": "/predict", "json": {"amount": 70.0, "country": "DE"}},
    {"method": "POST", "url": "/predict", "content": b"{not json", "headers": {"content-type": "application/json"}},
    {"method": "POST", "url": "/predict", "content": b"[1, 2]", "headers": {"content-type": "application/json"}},
    {"method": "POST", "url": "/score/a", "json": {"amount": 4.0}},
    {"method": "POST", "url": "/echo_twice", "json": {"x": 1, "y": [1, 2]}},
    {"method": "GET", "url": "/stream?n=4"},
    {"method": "GET", "url": "/boom"},
    {"method": "GET", "url": "/status/404"},
    {"method": "GET", "url": "/status/503"},
    {"method": "GET", "url": "/nowhere"},
    {"method": "GET", "url": "/healthz"},
    {"method": "PURGE", "url": "/items/1"},
]


def _send_all(app: Any, requests: list[dict[str, Any]]) -> list[tuple[int, dict[str, str], bytes]]:
    """Each request through httpx's ASGI transport: (status, headers, body)."""

    async def run() -> list[tuple[int, dict[str, str], bytes]]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            out = []
            for req in requests:
                r = await client.request(**req)
                out.append((r.status_code, dict(r.headers), r.content))
            return out

    return asyncio.run(run())


def _http(cap: Capture) -> dict[tuple[str, str, str], Profile]:
    """The request profiles by (method, route, status)."""
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
    assert [s for s, _, _ in plain] == [200, 200, 200, 500, 500, 200, 200, 200, 500, 404, 503, 404, 200, 405]


def test_request_telemetry_by_route_template() -> None:
    """Duration, sizes, errors and in-flight count are recorded per method, route template and status; health checks are not."""
    with capture() as cap:
        _send_all(create_app(), [*REQUESTS, {"method": "GET", "url": "/items/9"}])
        http = _http(cap)
    assert set(http) == {
        ("GET", "/items/{item_id}", "200"), ("GET", "/async/{item_id}", "200"), ("POST", "/predict", "200"),
        ("POST", "/predict", "500"), ("POST", "/score/{kind}", "200"), ("POST", "/echo_twice", "200"),
        ("GET", "/stream", "200"), ("GET", "/boom", "500"), ("GET", "/status/{code}", "404"),
        ("GET", "/status/{code}", "503"), ("GET", "__missing__", "404"),
        ("_OTHER", "/items/{item_id}", "405"),
    }
    items = http[("GET", "/items/{item_id}", "200")]
    assert items.calls == 2 and items.latency is not None and items.latency.n == 2
    assert items.columns["http.response.body.size"].numeric is not None
    assert items.columns["http.response.body.size"].numeric.max == len(b'{"id":9}')
    assert items.columns["http.request.body.size"].numeric is not None and items.columns["http.request.body.size"].numeric.max == 0
    assert items.columns["http.server.active_requests"].numeric is not None and items.columns["http.server.active_requests"].numeric.min == 1
    predict = http[("POST", "/predict", "200")]
    assert predict.columns["http.request.body.size"].numeric is not None
    assert predict.columns["http.request.body.size"].numeric.max == len(b'{"amount":70.0,"country":"DE"}')
    assert http[("GET", "/boom", "500")].errors == {"RuntimeError": 1}
    assert http[("POST", "/predict", "500")].errors == {"JSONDecodeError": 1, "AttributeError": 1}
    assert sorted(http[("GET", "/stream", "200")].columns) == ["http.request.body.size", "http.response.body.size", "http.server.active_requests"]


def test_model_route_inputs_and_outputs() -> None:
    """A model route's JSON body becomes the model's features and its JSON answer its outputs; bad bodies count as calls without features."""
    with capture() as cap:
        _send_all(create_app(), [
            {"method": "POST", "url": "/predict", "json": {"amount": 70.0, "country": "DE", "user": {"age": 30, "tags": ["a", "b"]}}},
            {"method": "POST", "url": "/predict", "json": {"amount": 10.0, "country": "FR", "user": {"age": 40, "tags": ["c"]}}},
            {"method": "POST", "url": "/predict", "content": b"{not json", "headers": {"content-type": "application/json"}},
        ])
        fraud = cap.merged("fraud")
    assert fraud.calls == 3 and fraud.errors == {"JSONDecodeError": 1}
    assert fraud.columns["amount"].numeric is not None and fraud.columns["amount"].numeric.max == 70.0
    assert fraud.columns["country"].category_counts() == {"DE": 1, "FR": 1}
    assert set(fraud.columns) == {"amount", "country", "user.age", "user.tags.0", "user.tags.1"}
    assert fraud.outputs["label"].category_counts() == {"fraud": 1, "ok": 1}
    assert fraud.outputs["score"].count == 2


def test_monitor_on_handler_is_not_counted_twice() -> None:
    """A model route whose model is also @monitor-ed (on the handler's model call) is recorded once, by the decorator."""
    with capture() as cap:
        _send_all(create_app(), [{"method": "POST", "url": f"/score/k{i}", "json": {"amount": float(i)}} for i in range(7)])
        scorer = cap.merged("scorer")
        http = _http(cap)
    assert scorer.calls == 7
    assert http[("POST", "/score/{kind}", "200")].calls == 7


def test_client_errors_are_not_model_calls_and_big_bodies_are_not_kept() -> None:
    """4xx answers on a model route are not model calls; a body over max_body_bytes still counts the call, without features."""
    app = FastAPI()

    @app.post("/predict/{kind}")
    async def predict(kind: str, request: Request) -> dict[str, float]:
        body = await request.json()
        if kind == "reject":
            raise HTTPException(422, "no")
        return {"score": float(len(body))}

    instrument_app(app, model_routes={"/predict/{kind}": {"model": "bounded", "version": "2"}}, max_body_bytes=64)
    with capture() as cap:
        _send_all(app, [
            {"method": "POST", "url": "/predict/ok", "json": {"a": 1}},
            {"method": "POST", "url": "/predict/reject", "json": {"a": 1}},
            {"method": "POST", "url": "/predict/ok", "json": {"a": 1, "pad": "x" * 200}},
        ])
        bounded = cap.merged("bounded")
    assert bounded.calls == 2 and bounded.version == "2"
    assert bounded.columns["a"].count - bounded.columns["a"].missing == 1
    assert bounded.outputs["score"].count == 2
    assert mlwatch.health()["dropped"].get("http_body_too_large", 0) >= 1


def test_streaming_and_app_messages_pass_through_unchanged() -> None:
    """A raw ASGI app's messages reach the server one by one, unchanged; its receive() sees every body chunk once."""
    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            received.append(message)
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"application/json")]})
        for chunk in (b'{"a":', b" 1", b"}"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def run(asgi: Any) -> list[Message]:
        sent: list[Message] = []
        inbox: list[Message] = [
            {"type": "http.request", "body": b'{"x": ', "more_body": True},
            {"type": "http.request", "body": b"2}", "more_body": False},
        ]

        async def receive() -> Message:
            return inbox.pop(0)

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/raw", "headers": [(b"transfer-encoding", b"chunked")]}
        asyncio.run(asgi(scope, receive, send))
        return sent

    with capture() as cap:
        plain = run(app)
        plain_received = list(received)
        received.clear()
        watched = run(MlwatchASGIMiddleware(app, model_routes={"/raw": "raw"}, route_of=lambda scope: "/raw"))
        raw = cap.merged("raw")
        http = _http(cap)
    assert watched == plain and received == plain_received
    assert raw.columns["x"].count == 1 and raw.outputs["a"].count == 1
    size = http[("POST", "/raw", "201")].columns["http.request.body.size"].numeric
    assert size is not None and size.max == len(b'{"x": 2}')


def test_app_exception_passes_through_untouched() -> None:
    """The app's own exception reaches the server as the same object; the request is recorded as a 500 with its type."""
    error = KeyError("mine")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise error

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent")

    with capture() as cap:
        with pytest.raises(KeyError) as info:
            asyncio.run(MlwatchASGIMiddleware(app)({"type": "http", "method": "GET", "path": "/x", "headers": []}, receive, send))
        http = _http(cap)
    assert info.value is error
    assert http[("GET", "__missing__", "500")].errors == {"KeyError": 1}


def test_mlwatch_failures_never_reach_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    """When mlwatch's own code fails inside a request, the answer is unchanged and the failure is counted."""
    app = create_app()
    before = mlwatch.health()["internal_errors"].get("http_middleware", 0)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("mlwatch bug")

    with capture():
        _send_all(app, [{"method": "GET", "url": "/items/1"}])  # builds the middleware stack
        middleware = app.middleware_stack
        assert isinstance(middleware, MlwatchASGIMiddleware)
        monkeypatch.setattr(middleware.telemetry, "record", broken)
        monkeypatch.setattr(middleware.telemetry, "sink", False)  # the C tap leaves recording to the Python path
        monkeypatch.setattr(ModelRoute, "deferred", broken)
        got = _send_all(app, [{"method": "GET", "url": "/items/1"}, {"method": "POST", "url": "/predict", "json": {"amount": 1.0}}])
    assert [(s, b) for s, _, b in got] == [(200, b'{"id":1}'), (200, b'{"score":0.01,"label":"ok"}')]
    # the GET's record, the POST's route and its record
    assert mlwatch.health()["internal_errors"].get("http_middleware", 0) - before == 3


def test_excluded_paths_and_prefixes() -> None:
    """Excluded paths, exact or by prefix, are not recorded at all."""
    app = FastAPI()

    @app.get("/internal/{name}")
    def internal(name: str) -> str:
        return name

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    instrument_app(app, exclude_paths=["/ping", "/internal/*"], http_model="excluded.http")
    with capture() as cap:
        _send_all(app, [{"method": "GET", "url": "/internal/a"}, {"method": "GET", "url": "/ping"}, {"method": "GET", "url": "/other"}])
        profiles = cap.profiles("excluded.http")
    assert sum(p.calls for p in profiles) == 1 and profiles[0].segment["http.response.status_code"] == "404"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model_routes": {"predict": "m"}}, "starting with '/'"),
        ({"model_routes": {"/p": ""}}, "non-empty"),
        ({"model_routes": {"/p": {"version": "1"}}}, "names no model"),
        ({"model_routes": {"/p": {"model": "m", "bogus": 1}}}, "unknown monitor option"),
        ({"exclude_paths": ["healthz"]}, "exclude_paths"),
        ({"max_body_bytes": -1}, "max_body_bytes"),
        ({"http_model": ""}, "http_model"),
    ],
)
def test_configuration_errors_raise_at_instrumentation(options: dict[str, Any], message: str) -> None:
    """A wrong option raises ConfigError when the app is instrumented, never on a request."""
    with pytest.raises(ConfigError, match=message):
        instrument_app(create_app(instrument=False), **options)


def test_instrument_app_is_idempotent_and_checks_its_argument() -> None:
    """A second instrument_app call returns the same middleware; anything but a Starlette app is refused."""
    app = create_app(instrument=False)
    first = instrument_app(app, model_routes=MODEL_ROUTES)
    assert instrument_app(app) is first
    with pytest.raises(ConfigError):
        instrument_app(object())  # type: ignore[arg-type]


def test_lifespan_shutdown_flushes_open_windows() -> None:
    """The ASGI lifespan's shutdown exports the open windows (servers may exit without running atexit)."""
    app = create_app()

    async def lifespan() -> None:
        inbox: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[Message] = []

        async def receive() -> Message:
            return inbox.pop(0)

        async def send(message: Message) -> None:
            sent.append(message)

        await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
        assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]

    with capture() as cap:
        _send_all(app, [{"method": "GET", "url": "/items/1"}])
        asyncio.run(lifespan())
        delivered = list(cap.exporter.profiles)
    assert any(p.model == "http.server" and p.calls == 1 for p in delivered)


def _run_lifespan(app: Any) -> list[str]:
    """Drive the ASGI lifespan (startup, then shutdown) as a server does; the types of the messages the app sent."""
    inbox: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> Message:
        return inbox.pop(0)

    async def send(message: Message) -> None:
        sent.append(message["type"])

    asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    return sent


def test_lifespan_is_spoken_for_an_app_without_it() -> None:
    """An app that rejects the lifespan scope before reading it (as Django's ASGI handler does) still gets the final
    flush at shutdown: the middleware answers the protocol for it; an app that fails during its own startup still fails."""

    async def no_lifespan(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError("can only handle ASGI/HTTP connections, not lifespan")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def failing_startup(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        raise RuntimeError("database unreachable")

    app = MlwatchASGIMiddleware(no_lifespan)
    with capture() as cap:
        assert _send_all(app, [{"method": "GET", "url": "/x"}])[0][0] == 200
        assert _run_lifespan(app) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
        delivered = list(cap.exporter.profiles)
    assert sum(p.calls for p in delivered if p.model == "http.server") == 1
    with pytest.raises(RuntimeError, match="database unreachable"):
        _run_lifespan(MlwatchASGIMiddleware(failing_startup))


@pytest.mark.parametrize(("module", "blocked", "extra"), [("fastapi", "starlette", "fastapi"), ("flask", "flask", "flask")])
def test_missing_framework_names_the_extra(module: str, blocked: str, extra: str) -> None:
    """Importing a framework module without its framework says which extra to install."""
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        f"try:\n    import mlwatch.integrations.{module}\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert f'pip install "mlwatch[{extra}]"' in out


def test_core_import_stays_free_of_frameworks() -> None:
    """Importing mlwatch and the pure middleware imports no web framework."""
    code = (
        "import sys, mlwatch, mlwatch.integrations.asgi, mlwatch.integrations.wsgi\n"
        "print(sorted(m for m in ('starlette', 'fastapi', 'flask', 'werkzeug', 'uvicorn', 'gunicorn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_large_batches_are_aggregated_exactly_in_slices() -> None:
    """Far more requests than one aggregation slice are counted exactly, per segment, with their model calls."""
    from mlwatch.integrations._http_metrics import SLICE

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        status = 200 if scope["path"] == "/ok" else 404
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"y": 1}'})

    middleware = MlwatchASGIMiddleware(app, model_routes={"/ok": "sliced"}, http_model="sliced.http", route_of=lambda scope: scope["path"])

    async def run(n: int) -> None:
        async def receive() -> Message:
            return {"type": "http.request", "body": b'{"x": 2}'}

        async def send(message: Message) -> None:
            return None

        for i in range(n):
            path = "/ok" if i % 3 else "/missing"
            await middleware({"type": "http", "method": "POST", "path": path, "headers": [(b"content-length", b"8")]}, receive, send)

    n = 3 * SLICE + 7
    with capture() as cap:
        asyncio.run(run(n))
        by_status = {p.segment["http.response.status_code"]: p.calls for p in cap.profiles("sliced.http")}
        sliced = cap.merged("sliced")
    ok = sum(1 for i in range(n) if i % 3)
    assert by_status == {"200": ok, "404": n - ok}
    assert sliced.calls == ok and sliced.columns["x"].count == ok and sliced.outputs["y"].count == ok
