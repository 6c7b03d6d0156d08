"""OTLP decoding: protobuf and JSON requests, profile record selection, replies in the request's encoding."""

from __future__ import annotations

import json

import pytest

from mlwatch.collector import otlp_decode
from mlwatch.collector.errors import HttpError

from .conftest import otlp_request


def test_media_types() -> None:
    """Protobuf and JSON (with parameters) are recognised; anything else is 415."""
    assert otlp_decode.media_type("application/x-protobuf") == otlp_decode.PROTOBUF
    assert otlp_decode.media_type("application/json; charset=utf-8") == otlp_decode.JSON
    for bad in (None, "", "text/plain", "application/grpc"):
        with pytest.raises(HttpError) as info:
            otlp_decode.media_type(bad)
        assert info.value.status == 415


@pytest.mark.parametrize("as_json", [False, True])
def test_profiles_picked_from_both_encodings(as_json: bool) -> None:
    """mlwatch.profile records keep their bytes and the resource identity; other records are counted as ignored."""
    body = otlp_request([b"\x00\x01binary\xff", b"second"], service="shop", instance="pod-7", as_json=as_json, other_records=2)
    kind = otlp_decode.JSON if as_json else otlp_decode.PROTOBUF
    records, ignored = otlp_decode.extract_profiles(otlp_decode.decode_logs(body, kind))
    assert [(r.service, r.instance, r.payload) for r in records] == [
        ("shop", "pod-7", b"\x00\x01binary\xff"), ("shop", "pod-7", b"second")
    ]
    assert ignored == 2


def test_event_name_attribute_and_defaults() -> None:
    """The older event.name attribute works; a missing service is unknown_service; a non-bytes body has no payload."""
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"attributes": [{"key": "event.name", "value": {"stringValue": "mlwatch.profile"}}], "body": {"stringValue": "x"}}
    ]}]}]}
    records, _ = otlp_decode.extract_profiles(otlp_decode.decode_logs(json.dumps(doc).encode(), otlp_decode.JSON))
    assert records[0].service == "unknown_service" and records[0].instance == "" and records[0].payload is None


@pytest.mark.parametrize(("body", "kind"), [
    (b"\xff\xff\xff\xff", otlp_decode.PROTOBUF),
    (b"[1, 2]", otlp_decode.JSON),
    (b'{"resourceLogs": 5}', otlp_decode.JSON),
    (b"\xff\xfe", otlp_decode.JSON),
    (b'{"a": NaN}', otlp_decode.JSON),
    (b"[" * 100_000, otlp_decode.JSON),
])
def test_malformed_is_400(body: bytes, kind: str) -> None:
    """Bytes that are not an OTLP logs request are a 400, whatever breaks."""
    with pytest.raises(HttpError) as info:
        otlp_decode.decode_logs(body, kind)
    assert info.value.status == 400


def test_responses() -> None:
    """Replies are encoded like the request; partial success carries the rejected count."""
    assert otlp_decode.logs_response(otlp_decode.PROTOBUF) == b""
    assert json.loads(otlp_decode.logs_response(otlp_decode.JSON, 2, "bad")) == {
        "partialSuccess": {"rejectedLogRecords": "2", "errorMessage": "bad"}
    }
    assert otlp_decode.metrics_response(otlp_decode.JSON) == b"{}"
