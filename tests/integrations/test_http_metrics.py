"""The shared pieces: route templates, excluded paths, method names, semantic-convention attributes and metrics, JSON bodies."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from otlp_receiver import Receiver, any_value

import mlwatch
from mlwatch import ConfigError
from mlwatch._runtime import Runtime
from mlwatch.integrations._body import MAX_ARRAY_ITEMS, BodyBuffer, json_fields
from mlwatch.integrations._http_metrics import PathFilter, RouteTable, normalize_method, semconv_attributes


def test_route_table_matches_templates_of_both_styles() -> None:
    """Starlette {x} and Werkzeug <conv:x> placeholders match one path segment; path converters match several."""
    table = RouteTable({"/predict": 1, "/items/{id}": 2, "/users/<int:uid>/score": 3, "/files/{rest:path}": 4, "/raw/<path:p>": 5})
    assert table.match("/predict") == ("/predict", 1)
    assert table.match("/items/7") == ("/items/{id}", 2)
    assert table.match("/items/7/more") is None
    assert table.match("/users/3/score") == ("/users/<int:uid>/score", 3)
    assert table.match("/files/a/b/c.txt") == ("/files/{rest:path}", 4)
    assert table.match("/raw/x/y") == ("/raw/<path:p>", 5)
    assert table.match("/predict/") is None
    with pytest.raises(ConfigError):
        RouteTable({"predict": 1})


def test_path_filter_exact_and_prefix() -> None:
    """Excluded paths are exact unless they end with '*'."""
    f = PathFilter(["/healthz", "/internal/*"])
    assert f("/healthz") and f("/internal/") and f("/internal/metrics")
    assert not f("/healthz/x") and not f("/intern")
    with pytest.raises(ConfigError):
        PathFilter(["healthz"])


def test_methods_follow_the_semantic_conventions() -> None:
    """Standard methods are kept (upper-cased); anything else is _OTHER, so the cardinality is bounded."""
    assert [normalize_method(m) for m in ("GET", "post", "QUERY", "PURGE", "")] == ["GET", "POST", "QUERY", "_OTHER", "_OTHER"]


def test_semconv_attributes_from_a_segment() -> None:
    """A request profile's segment gives OpenTelemetry attributes: the status as an int, no route when none matched,
    error.type from the exception or a 5xx status, _OTHER for a folded segment."""
    seg = {"http.request.method": "GET", "http.route": "/items/{id}", "http.response.status_code": "200", "url.scheme": "https"}
    base = {"http.request.method": "GET", "url.scheme": "https"}
    assert semconv_attributes(seg) == {**base, "http.route": "/items/{id}", "http.response.status_code": 200}
    assert semconv_attributes({**seg, "http.route": "__missing__", "http.response.status_code": "0"}) == base
    assert semconv_attributes({**seg, "http.response.status_code": "503"})["error.type"] == "503"
    assert semconv_attributes({**seg, "http.response.status_code": "500", "error.type": "KeyError"})["error.type"] == "KeyError"
    assert semconv_attributes(dict.fromkeys(seg, "__other__")) == {"http.request.method": "_OTHER"}


#: OpenTelemetry's advice for http.server.request.duration, and the SDK's default buckets (body sizes have no advice).
SEMCONV_DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0]
SDK_DEFAULT_BUCKETS = [0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0, 10000.0]


def _points(metric: Any) -> dict[frozenset[tuple[str, Any]], Any]:
    """A metric's data points by their attribute set."""
    data = getattr(metric, metric.WhichOneof("data"))
    return {frozenset((kv.key, any_value(kv.value)) for kv in dp.attributes): dp for dp in data.data_points}


def test_semconv_http_metrics_reach_an_otlp_receiver(runtime: Runtime) -> None:
    """Over real OTLP/HTTP: http.server.request.duration, .request.body.size, .response.body.size (histograms with
    the semantic conventions' units, buckets and attributes) and http.server.active_requests (an up-down counter by
    method and scheme, read while a request is in flight), exactly as an OpenTelemetry-instrumented server names them."""
    pytest.importorskip("fastapi")
    import httpx
    from fastapi import FastAPI, HTTPException

    from mlwatch.integrations.fastapi import instrument_app

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.post("/echo")
    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return body

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/down")
    async def down() -> None:
        raise HTTPException(status_code=503)

    @app.get("/flush")
    def flush() -> str:  # metrics are collected while this request is in flight
        mlwatch.flush()
        return "ok"

    instrument_app(app)
    payload = json.dumps({"a": 1, "b": "xy"}).encode()

    async def send_all() -> list[int]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            statuses = [(await client.get(f"/items/{i}")).status_code for i in range(3)]
            statuses += [(await client.post("/echo", content=payload, headers={"content-type": "application/json"})).status_code for _ in range(2)]
            statuses += [(await client.get(path)).status_code for path in ("/boom", "/down", "/nowhere")]
            statuses.append((await client.get("/flush")).status_code)
            return statuses

    with Receiver() as rx:
        mlwatch.configure(endpoint=rx.url, window_seconds=3600)
        assert asyncio.run(send_all()) == [200, 200, 200, 200, 200, 500, 503, 404, 200]
        mlwatch.flush()  # the /flush request itself, and the metrics once more
        exports = rx.metrics()
        metrics = {name: ms[-1] for name, ms in exports.items()}  # cumulative: the last export has everything

    http = {"http.request.method": "GET", "url.scheme": "http"}
    expected = {  # attribute set -> (requests, request bytes, response bytes)
        frozenset({**http, "http.route": "/items/{item_id}", "http.response.status_code": 200}.items()): (3, 0, 3 * len(b'{"id":0}')),
        frozenset({**http, "http.request.method": "POST", "http.route": "/echo", "http.response.status_code": 200}.items()): (
            2, 2 * len(payload), 2 * len(b'{"a":1,"b":"xy"}')),
        frozenset({**http, "http.route": "/boom", "http.response.status_code": 500, "error.type": "RuntimeError"}.items()): (
            1, 0, len(b"Internal Server Error")),
        frozenset({**http, "http.route": "/down", "http.response.status_code": 503, "error.type": "503"}.items()): (
            1, 0, len(b'{"detail":"Service Unavailable"}')),
        frozenset({**http, "http.response.status_code": 404}.items()): (1, 0, len(b'{"detail":"Not Found"}')),
        frozenset({**http, "http.route": "/flush", "http.response.status_code": 200}.items()): (1, 0, len(b'"ok"')),
    }
    for name, unit, bounds, column in (
        ("http.server.request.duration", "s", SEMCONV_DURATION_BUCKETS, None),
        ("http.server.request.body.size", "By", SDK_DEFAULT_BUCKETS, 1),
        ("http.server.response.body.size", "By", SDK_DEFAULT_BUCKETS, 2),
    ):
        metric = metrics[name]
        assert (metric.unit, metric.WhichOneof("data")) == (unit, "histogram"), name
        assert metric.histogram.aggregation_temporality == 2  # cumulative
        points = _points(metric)
        assert set(points) == set(expected), name
        for attrs, dp in points.items():
            assert list(dp.explicit_bounds) == bounds and len(dp.bucket_counts) == len(bounds) + 1
            assert dp.count == sum(dp.bucket_counts) == expected[attrs][0], (name, attrs)
            if column is not None:
                assert dp.sum == expected[attrs][column], (name, attrs)
    assert metrics["http.server.request.duration"].description == "Duration of HTTP server requests."
    active = metrics["http.server.active_requests"]
    assert (active.unit, active.WhichOneof("data"), active.sum.is_monotonic) == ("{request}", "sum", False)
    get, post = frozenset(http.items()), frozenset({**http, "http.request.method": "POST"}.items())
    during = [{attrs: dp.as_int for attrs, dp in _points(m).items()}.get(get) for m in exports["http.server.active_requests"]]
    after = {attrs: dp.as_int for attrs, dp in _points(active).items()}
    assert 1 in during and (after[get], after[post]) == (0, 0)  # the /flush request was in flight during its export
    assert all({k for k, _ in attrs} == {"http.request.method", "url.scheme"} for attrs in after)
    assert not any(n for attrs, n in after.items() if attrs not in (get, post))  # other tests' middleware: nothing in flight


def test_in_flight_counts_stay_bounded() -> None:
    """Requests with made-up methods or schemes are counted in flight under _OTHER: clients cannot grow the counts."""
    from mlwatch.integrations._http_metrics import HttpTelemetry

    telemetry = HttpTelemetry(http_model="test.bounded")
    keys = [telemetry.arrive(f"M{i}", "gopher" if i % 2 else "https") for i in range(500)] + [telemetry.arrive("GET", "http")]
    assert set(telemetry.in_flight) == {("_OTHER", "_OTHER"), ("_OTHER", "https"), ("GET", "http")}
    for key in keys:
        telemetry.in_flight[key] -= 1
    assert set(telemetry.in_flight.values()) == {0}


def test_json_fields_flatten_and_never_raise() -> None:
    """A JSON object's scalars become fields (nested with dots, short arrays by index); anything else gives no fields."""
    body = json_fields(b'{"a": 1, "b": {"c": "x", "d": [1, 2]}, "long": ' + str(list(range(MAX_ARRAY_ITEMS + 1))).encode() + b', "rows": [{"z": 1}]}')
    assert body == {"a": 1, "b.c": "x", "b.d.0": 1, "b.d.1": 2}
    before = mlwatch.health()["dropped"].get("http_body_not_json", 0)
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe", b"3"):
        assert json_fields(raw) == {}
    assert mlwatch.health()["dropped"].get("http_body_not_json", 0) - before == 4


@pytest.mark.parametrize("parser", ["orjson", "stdlib"])
def test_json_value_decides_as_the_standard_library(parser: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """orjson (when installed) with the standard library deciding what it refuses, and the direct C-scanner
    parse alone, each give what json.loads gives (None where it raises), on odd and mutated inputs."""
    import random

    from mlwatch.integrations import _body
    from mlwatch.integrations._body import json_value

    if parser == "orjson":
        pytest.importorskip("orjson")
        assert _body._fast_loads is not None
    else:
        monkeypatch.setattr(_body, "_fast_loads", None)
    cases = [
        b"", b" ", b"{}", b' {"a": 1} ', b'{"a":1} x', b"[1,2]", b" 3 \n", b'"x"', b"\xff", b'{"a": NaN}', b'{"a": 1e400}',
        b'\t{"b": [1, {"c": null}]}\r\n', b'{"a":1}{"b":2}', b"nul", b"true ", b'{"\\ud800": 1}', b"[" * 5000 + b"]" * 5000,
        b'{"a": 1, "a": 2, "b": 3}', b'{"big": 123456789012345678901234567890, "neg": -9223372036854775809}', b"-0.0",
        b'{"x": 1.7976931348623157e308, "y": 5e-324, "z": 0.1}', b'"\\u00e9\xc3\xa9"', b"\xef\xbb\xbf{}", b'{"a": Infinity}',
        b'{"t": "tab\there"}', b"[" * 1100 + b"]" * 1100,
    ]
    rng = random.Random(11)
    for _ in range(2000):
        body = bytearray(rng.choice(cases[2:13]))
        for _ in range(rng.randint(1, 3)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        cases.append(bytes(body))

    def parse_int(literal: str) -> int | float:  # orjson reads integers beyond 64 bits as floats (numbers are profiled as floats anyway)
        value = int(literal)
        return value if parser == "stdlib" or -(2**63) <= value < 2**64 else float(literal)

    for raw in cases:
        try:
            expected = json.loads(raw.decode("utf-8"), parse_int=parse_int)
        except (ValueError, RecursionError):
            expected = None
        assert repr(json_value(raw)) == repr(expected), raw


@pytest.mark.parametrize("parser", ["orjson", "stdlib"])
def test_json_rows_reads_a_batch_as_json_fields_reads_each_body(parser: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch reading (a few passes when every body is a flat object) gives json_fields' answer for
    each body, and counts the bodies that are not JSON objects once each."""
    import random

    from mlwatch.integrations import _body
    from mlwatch.integrations._body import json_rows

    if parser == "orjson":
        pytest.importorskip("orjson")
    else:
        monkeypatch.setattr(_body, "_fast_loads", None)
    flat = [b'{"a": 1, "b": "x"}', b'{"a": 2.5, "c": null, "d": true}', b"{}", b'{"a": 1, "a": 2}']
    odd = [b'{"n": {"m": 1}}', b'{"l": [1, 2]}', b"[1]", b"{bad", b'{"a": NaN}', b"3", b'{"big": 123456789012345678901}']
    rng = random.Random(5)
    batches = [flat, flat * 3, []] + [rng.choices(flat + odd, k=rng.randint(1, 8)) for _ in range(200)]
    for batch in batches:
        before = mlwatch.health()["dropped"].get("http_body_not_json", 0)
        got = json_rows(batch)
        counted = mlwatch.health()["dropped"].get("http_body_not_json", 0) - before
        want = [json_fields(raw, count=False) for raw in batch]
        assert repr(got) == repr(want), batch
        assert counted == sum(1 for raw in batch if raw in (b"[1]", b"{bad", b"3")), batch


def test_json_rows_offers_the_gil_between_parts_of_a_large_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """orjson holds the GIL while it parses: a batch of large bodies is parsed a part at a time, the GIL
    offered between parts, with the same answers."""
    from mlwatch.integrations import _body

    offers: list[int] = []
    monkeypatch.setattr(_body, "offer", lambda: offers.append(1))
    flat = json.dumps({f"k{i}": i for i in range(200)}).encode()
    nested = json.dumps({"inputs": {f"k{i}": i for i in range(200)}}).encode()
    batch = [flat, nested, b"{bad"] * (3 * _body.PARSE_BYTES // len(flat))
    assert _body.json_rows(batch) == [json_fields(raw) for raw in batch]
    assert len(offers) >= 2


def test_body_buffer_keeps_nothing_past_its_cap() -> None:
    """Chunks are kept up to the cap; past it the body is dropped whole (half a JSON document is useless)."""
    buf = BodyBuffer(10)
    buf.add(b'{"a":')
    buf.add(b"1}")
    raw = buf.raw()
    assert raw is not None and json_fields(raw) == {"a": 1}
    buf.add(b" " * 10)
    assert buf.over and buf.raw() is None
    assert BodyBuffer(10).raw() is None
    reused = bytearray(b'{"b":2}')
    buf = BodyBuffer(100)
    buf.add(reused)  # a server may reuse its buffer: what is kept is a copy
    reused[:] = b"xxxxxxx"
    assert buf.raw() == b'{"b":2}'


def test_a_request_counts_in_the_window_it_started_in_whatever_the_buffer_order() -> None:
    """Requests are buffered when they end; a long one that started in the previous window still counts there,
    and requests of one window group by route and status."""
    import time

    from mlwatch.integrations.asgi import MlwatchASGIMiddleware
    from mlwatch.testing import capture

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    def calls_by_window_and_status(cap: Any) -> dict[tuple[float, str], int]:
        return {(p.window_start, p.segment["http.response.status_code"]): p.calls for p in cap.profiles("t_http_window_order")}

    record = MlwatchASGIMiddleware(app, http_model="t_http_window_order").telemetry.record
    assert record is not None
    offset = time.time_ns() - time.perf_counter_ns()
    boundary = (time.time_ns() // 60_000_000_000) * 60_000_000_000
    start = boundary / 1e9
    with capture() as cap:  # one window, two statuses
        for wall, status in ((boundary + 10 * 10**9, 200), (boundary + 20 * 10**9, 404), (boundary + 30 * 10**9, 200)):
            record(wall - offset, 1_000_000, "GET", "/items/{id}", status, None, 0, 10, 1, "http")
        assert calls_by_window_and_status(cap) == {(start, "200"): 2, (start, "404"): 1}
    with capture() as cap:  # a late-buffered request of the previous window between two of this one
        for wall, status in ((boundary + 10 * 10**9, 200), (boundary - 10 * 10**9, 200), (boundary + 20 * 10**9, 404), (boundary + 30 * 10**9, 200)):
            record(wall - offset, 1_000_000, "GET", "/items/{id}", status, None, 0, 10, 1, "http")
        assert calls_by_window_and_status(cap) == {(start - 60, "200"): 1, (start, "200"): 2, (start, "404"): 1}


@pytest.mark.parametrize("n", [40, 3000])
def test_request_records_fold_alike_with_and_without_the_c_loops(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The C reading of a batch (one group told in one pass, the numeric fields read into arrays,
    a None request size read as missing) gives the profiles the Python reading gives."""
    import random
    import time

    from mlwatch import _fast
    from mlwatch.integrations.asgi import MlwatchASGIMiddleware
    from mlwatch.testing import capture

    if _fast.SPEEDUPS is None:
        pytest.skip("mlwatch._speedups was not built (no C compiler)")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    rng = random.Random(n)
    t0 = time.perf_counter_ns()
    mixed = [  # several groups, a None size, an error
        (t0 + i, rng.randint(10**5, 10**8), rng.choice(["GET", "POST"]), "/r", rng.choice([200, 200, 404]), rng.choice([None, None, "KeyError"]),
         rng.choice([None, rng.randint(0, 5000)]), rng.randint(0, 900), rng.randint(1, 9), "http")
        for i in range(n)
    ]
    one_group = [(t, d, "POST", "/predict", 200, None, q, r, a, "http") for t, d, _, _, _, _, q, r, a, _ in mixed]
    big = [(*rec[:1], 2**60, *rec[2:]) for rec in one_group[:5]] + one_group[5:]  # a duration past 2**53 ns: the Python reading

    def profiles(records: list[tuple[Any, ...]], speedups: Any) -> dict[Any, dict[str, Any]]:
        monkeypatch.setattr(_fast, "SPEEDUPS", speedups)
        record = MlwatchASGIMiddleware(app, http_model="t_http_fold_alike").telemetry.record
        assert record is not None
        with capture() as cap:
            for rec in records:
                record(*rec)
            got = {
                tuple(sorted(p.segment.items())): {
                    "calls": p.calls, "errors": dict(p.errors), "latency": latency(p.latency), "columns": {name: column(col) for name, col in sorted(p.columns.items())},
                }
                for p in cap.profiles("t_http_fold_alike")
            }
        return got

    # Sketches of more values than KLL keeps exactly compact at random: their quantiles differ from
    # run to run whatever reads the values, so past that only what is exact is compared.
    exact = n <= 200

    def latency(kll: Any) -> Any:
        return np.asarray(kll.quantiles([0.0, 0.1, 0.5, 0.9, 1.0])).tolist() if exact else (kll.n, kll.min, kll.max)

    def column(col: Any) -> dict[str, Any]:
        summary = col.summary()
        return summary if exact else {k: v for k, v in summary.items() if not k.startswith("p")}

    fast = _fast.SPEEDUPS
    for records in (mixed, one_group, big):
        with_c, without = profiles(records, fast), profiles(records, None)
        assert with_c == without
        assert sum(p["calls"] for p in with_c.values()) == n
