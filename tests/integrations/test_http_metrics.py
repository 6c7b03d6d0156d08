"""The shared pieces: route templates, excluded paths, method names, semantic-convention attributes, JSON bodies."""

from __future__ import annotations

import pytest

import mlwatch
from mlwatch import ConfigError
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
    """A request profile's segment gives OpenTelemetry attributes: the status as an int, no route when none matched."""
    seg = {"http.request.method": "GET", "http.route": "/items/{id}", "http.response.status_code": "200"}
    assert semconv_attributes(seg) == {"http.request.method": "GET", "http.route": "/items/{id}", "http.response.status_code": 200}
    assert semconv_attributes({**seg, "http.route": "__missing__", "http.response.status_code": "0"}) == {"http.request.method": "GET"}


def test_json_fields_flatten_and_never_raise() -> None:
    """A JSON object's scalars become fields (nested with dots, short arrays by index); anything else gives no fields."""
    body = json_fields(b'{"a": 1, "b": {"c": "x", "d": [1, 2]}, "long": ' + str(list(range(MAX_ARRAY_ITEMS + 1))).encode() + b', "rows": [{"z": 1}]}')
    assert body == {"a": 1, "b.c": "x", "b.d.0": 1, "b.d.1": 2}
    before = mlwatch.health()["dropped"].get("http_body_not_json", 0)
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe", b"3"):
        assert json_fields(raw) == {}
    assert mlwatch.health()["dropped"].get("http_body_not_json", 0) - before == 4


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
