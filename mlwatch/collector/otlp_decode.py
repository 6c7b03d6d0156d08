"""OTLP/HTTP logs: decode a request (protobuf or JSON), pick the ``mlwatch.profile`` records, encode replies.

The identity used for idempotency comes from the resource attributes ``service.name`` and
``service.instance.id``; the profile's own identity and window come from its bytes, never from
log attributes (attributes are for humans and other backends). Records that are not
``mlwatch.profile`` events are ignored, so the collector can sit behind any OpenTelemetry
Collector pipeline. Protobuf is parsed by the upb runtime (C, fuzzed upstream, with a nesting
limit); JSON goes through ``google.protobuf.json_format`` after ``json.loads``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from mlwatch.collector.errors import HttpError

__all__ = [
    "EVENT_NAME",
    "PROTOBUF",
    "JSON",
    "ProfileRecord",
    "decode_logs",
    "decode_metrics",
    "extract_profiles",
    "logs_response",
    "media_type",
    "metrics_response",
]

EVENT_NAME = "mlwatch.profile"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_PROTOBUF_ALIASES = frozenset({PROTOBUF, "application/protobuf"})
UNKNOWN_SERVICE = "unknown_service"


@dataclass(frozen=True)
class ProfileRecord:
    """One ``mlwatch.profile`` log record: who sent it and the untrusted profile bytes."""

    service: str
    instance: str
    payload: bytes | None  # None when the body is not a bytes value (the record is rejected)


def media_type(content_type: str | None) -> str:
    """The request's OTLP encoding (`PROTOBUF` or `JSON`); 415 for anything else."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base in _PROTOBUF_ALIASES:
        return PROTOBUF
    if base == JSON:
        return JSON
    raise HttpError(
        415, "unsupported_media_type",
        f"content-type {base or '(none)'!r} is not OTLP: use {PROTOBUF} or {JSON}",
    )


def _parse(body: bytes, kind: str, message: ExportLogsServiceRequest | ExportMetricsServiceRequest) -> None:
    try:
        if kind == PROTOBUF:
            message.ParseFromString(body)
        else:
            # json.loads first: it rejects invalid UTF-8 and NaN literals with a clear error, and its
            # recursion limit stops absurdly nested documents before protobuf sees them.
            doc = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
            if not isinstance(doc, dict):
                raise ValueError("the OTLP JSON body must be an object")
            json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except (DecodeError, json_format.ParseError, ValueError, TypeError, RecursionError, UnicodeDecodeError) as exc:
        what = "protobuf" if kind == PROTOBUF else "JSON"
        raise HttpError(400, "malformed", f"not a valid OTLP {what} export request: {str(exc)[:300]}") from None


def _reject_constant(name: str) -> float:
    raise ValueError(f"JSON constant {name} is not allowed")


def decode_logs(body: bytes, kind: str) -> ExportLogsServiceRequest:
    """Parse an ``ExportLogsServiceRequest``; 400 when the bytes are not one."""
    request = ExportLogsServiceRequest()
    _parse(body, kind, request)
    return request


def decode_metrics(body: bytes, kind: str) -> ExportMetricsServiceRequest:
    """Parse an ``ExportMetricsServiceRequest`` (checked, then ignored); 400 when malformed."""
    request = ExportMetricsServiceRequest()
    _parse(body, kind, request)
    return request


def _string_attr(attributes: Iterable[KeyValue], key: str) -> str | None:
    for kv in attributes:
        if kv.key == key and kv.value.WhichOneof("value") == "string_value":
            return str(kv.value.string_value)
    return None


def extract_profiles(request: ExportLogsServiceRequest) -> tuple[list[ProfileRecord], int]:
    """The ``mlwatch.profile`` records of a request, and how many other records were ignored."""
    found: list[ProfileRecord] = []
    ignored = 0
    for resource_logs in request.resource_logs:
        attrs = resource_logs.resource.attributes
        service = _string_attr(attrs, "service.name") or UNKNOWN_SERVICE
        instance = _string_attr(attrs, "service.instance.id") or ""
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                name = record.event_name or _string_attr(record.attributes, "event.name")
                if name != EVENT_NAME:
                    ignored += 1
                    continue
                body = record.body
                payload = bytes(body.bytes_value) if body.WhichOneof("value") == "bytes_value" else None
                found.append(ProfileRecord(service=service[:256], instance=instance[:256], payload=payload))
    return found, ignored


def logs_response(kind: str, rejected: int = 0, message: str = "") -> bytes:
    """An ``ExportLogsServiceResponse`` in the request's encoding, with partial success when records were rejected."""
    response = ExportLogsServiceResponse()
    if rejected:
        response.partial_success.CopyFrom(ExportLogsPartialSuccess(rejected_log_records=rejected, error_message=message))
    if kind == PROTOBUF:
        return bytes(response.SerializeToString())
    return json_format.MessageToJson(response, indent=None).encode()


def metrics_response(kind: str) -> bytes:
    """An empty (fully successful) ``ExportMetricsServiceResponse`` in the request's encoding."""
    response = ExportMetricsServiceResponse()
    if kind == PROTOBUF:
        return bytes(response.SerializeToString())
    return b"{}"
