"""The OpenAPI 3.1 description served at ``/openapi.json``, kept by hand next to the routes.

A test checks that every route of the app is described here with the same methods, and nothing
else is, so the document cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_schema"]

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "malformed request or invalid parameter", 401: "missing or invalid bearer token",
            404: "nothing stored for this model, range or reference", 413: "body or profile over its limit",
            415: "unsupported content type or encoding", 422: "stored data could not be analysed",
            429: "too many ingest requests in flight (see Retry-After)", 500: "a worker crashed on this request"}
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _param(name: str, description: str, schema: dict[str, Any] | None = None, where: str = "query", required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "description": description, "schema": schema or {"type": "string"}}


_MODEL = _param("model", "model name", where="path", required=True)
_RANGE = [
    _param("start", "range start: epoch seconds or ISO 8601 (default: one hour before end)"),
    _param("end", "range end, exclusive for window starts (default: after the latest window)"),
    _param("service", "only profiles from this service.name"),
    _param("version", "only this model version"),
    _param("segment", "only this segment key, e.g. country=DE,tier=gold"),
]
_REFERENCE = [
    _param("reference", "which reference: auto (uploaded, else moving), uploaded or moving", {"enum": ["auto", "uploaded", "moving"]}),
    _param("reference_windows", "windows merged into the moving reference", {"type": "integer", "minimum": 1}),
    _param("columns", "comma-separated column names to restrict the analysis to"),
    _param("include_outputs", "set to false to leave model outputs out", {"enum": ["true", "false", "0", "1"]}),
]
_DRIFT = [
    _param("method", "drift method for every column", {"enum": ["auto", "ks", "psi", "js", "wasserstein", "hellinger", "chisquare"]}),
    _param("drift_share", "share of drifted columns that means dataset drift", {"type": "number", "minimum": 0, "maximum": 1}),
]
_LATENCY: dict[str, Any] = {"type": ["object", "null"], "properties": {q: {"type": "number"} for q in ("p50", "p90", "p99", "max")}}
_WINDOWS: dict[str, Any] = {"type": "object", "required": ["model", "start", "end", "windows"], "properties": {
    "model": {"type": "string"}, "start": {"type": "number"}, "end": {"type": "number"},
    "windows": {"type": "array", "items": {"type": "object", "properties": {
        "window_start": {"type": "number"}, "window_end": {"type": "number"}, "profiles": {"type": "integer"},
        "series": {"type": "integer"}, "rows": {"type": "integer"}, "calls": {"type": "integer"}, "errors": {"type": "integer"},
        "latency_seconds": {**_LATENCY, "description": "only with latency=true; seconds, null when the window recorded no latency"}}}}}}
_OTLP_BODY = {
    "required": True,
    "content": {
        "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
        "application/json": {"schema": {"type": "object", "description": "OTLP JSON encoding"}},
    },
}


_ALERT_FIELDS: dict[str, Any] = {
    "rule": {"type": "string"}, "model": {"type": "string"}, "metric": {"type": "string"},
    "state": {"enum": ["firing", "resolved"]}, "value": {"type": ["number", "null"]}, "threshold": {"type": ["number", "null"]},
    "feature": {"type": ["string", "null"]}, "segment": {"type": "string"}, "window_end": {"type": ["number", "null"]},
    "message": {"type": "string"}}
_ALERTS: dict[str, Any] = {"type": "object", "required": ["configured", "firing", "events"], "properties": {
    "configured": {"type": "boolean", "description": "false when the collector runs without --alerts"},
    "firing": {"type": "array", "items": {"type": "object", "properties": {**_ALERT_FIELDS, "since": {"type": "number"}}}},
    "events": {"type": "array", "items": {"type": "object", "properties": {**_ALERT_FIELDS, "at": {"type": "number"}}}},
    "rules": {"type": "array", "items": {"type": "object"}},
    "channels": {"type": "object", "additionalProperties": {"type": "object", "properties": {
        "type": {"enum": ["webhook", "email"]}, "sent": {"type": "integer"}, "failed": {"type": "integer"},
        "dropped": {"type": "integer"}, "last_error": {"type": ["string", "null"]}, "last_sent_at": {"type": ["number", "null"]}}}},
    "summary": {"type": ["object", "null"]},
    "windows_evaluated": {"type": "integer"}, "evaluation_errors": {"type": "integer"}}}


def _get(summary: str, params: list[dict[str, Any]], ok: dict[str, Any], *errors: int) -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": params, "responses": {"200": ok, **_errors(401, *errors)}}}


def openapi_schema() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict on every call)."""
    analysis = [_MODEL, *_RANGE, *_REFERENCE]
    paths: dict[str, Any] = {
        "/": {"get": {"summary": "the live dashboard (an HTML page that polls this API; no token needed for the page)",
                      "responses": {"200": {"description": "HTML page", "content": {"text/html": {}}}}}},
        "/v1/logs": {"post": {
            "summary": "OTLP/HTTP logs receiver: stores mlwatch.profile records, ignores other records",
            "requestBody": _OTLP_BODY,
            "responses": {"200": {"description": "ExportLogsServiceResponse (partial_success lists rejected records)"},
                          **_errors(400, 401, 413, 415, 429, 500)},
        }},
        "/v1/metrics": {"post": {
            "summary": "OTLP/HTTP metrics: validated and acknowledged (not stored)",
            "requestBody": _OTLP_BODY,
            "responses": {"200": {"description": "ExportMetricsServiceResponse"}, **_errors(400, 401, 413, 415, 429)},
        }},
        "/health": {"get": {"summary": "liveness, stored counts and worker health (no token needed)",
                            "responses": {"200": _json("collector health")}}},
        "/metrics": {"get": {"summary": "Prometheus text exposition: collector health, latest drift per feature, alert firing gauges",
                             "responses": {"200": {"description": "text/plain; version=0.0.4"}, **_errors(401)}}},
        "/openapi.json": {"get": {"summary": "this document", "responses": {"200": _json("OpenAPI 3.1")}}},
        "/api/services": _get("services that sent profiles", [], _json("services")),
        "/api/models": _get("models with stored profiles", [], _json("models")),
        "/api/alerts": _get(
            "alert rules evaluated in the collector: firing alerts, recent events (newest first), rules, channels",
            [_param("model", "only this model's alerts and events"),
             _param("limit", "at most this many events (default 100)", {"type": "integer", "minimum": 1})],
            _json("alerts", _ALERTS), 400,
        ),
        "/api/models/{model}/versions": _get("versions of a model", [_MODEL], _json("versions"), 404),
        "/api/models/{model}/features": _get(
            "input and output columns of a model", [_MODEL, _param("version", "only this version")], _json("features"), 404
        ),
        "/api/models/{model}/windows": _get(
            "windows in a range with counts (latency=true: and latency quantiles)",
            [_MODEL, *_RANGE, _param("latency", "true: add each window's latency quantiles (at most max_windows_per_query windows)",
                                     {"enum": ["true", "false", "0", "1"]})],
            _json("windows", _WINDOWS), 400, 404, 500,
        ),
        "/api/models/{model}/profile": _get(
            "merged profile of a range (format=mlw: the profile bytes)",
            [_MODEL, *_RANGE, _param("format", "json (default) or mlw", {"enum": ["json", "mlw"]})],
            _json("merged profile summary"), 400, 404, 500,
        ),
        "/api/models/{model}/drift": _get(
            "drift of the merged range against the reference", [*analysis, *_DRIFT], _json("drift report"), 400, 404, 422, 500
        ),
        "/api/models/{model}/drift/windows": _get(
            "drift of each window in the range against the reference", [*analysis, *_DRIFT], _json("per-window drift"),
            400, 404, 422, 500,
        ),
        "/api/models/{model}/quality": _get(
            "data quality of the merged range against the reference", analysis, _json("quality report"), 400, 404, 422, 500
        ),
        "/api/models/{model}/quality/windows": _get(
            "data quality of each window in the range", analysis, _json("per-window quality"), 400, 404, 422, 500
        ),
        "/api/models/{model}/model-quality": _get(
            "model quality from outcomes over a range (overall, per segment, per version)", [_MODEL, *_RANGE],
            _json("model quality"), 400, 404, 422, 500,
        ),
        "/api/models/{model}/reference": {
            "get": {"summary": "the uploaded reference (format=mlw: its bytes)",
                    "parameters": [_MODEL, _param("format", "json (default) or mlw", {"enum": ["json", "mlw"]})],
                    "responses": {"200": _json("reference description"), **_errors(401, 404)}},
            "put": {"summary": "upload the model's reference profile (.mlw bytes)",
                    "parameters": [_MODEL, _param("source", "free text recorded with the reference")],
                    "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                    "responses": {"201": _json("stored reference"), **_errors(400, 401, 413, 500)}},
            "delete": {"summary": "remove the uploaded reference", "parameters": [_MODEL],
                       "responses": {"204": {"description": "removed"}, **_errors(401, 404)}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "mlwatch collector", "version": "1", "description": "OTLP receiver and drift API for mlwatch profiles"},
        "paths": paths,
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error", "message", "status"], "properties": {
                "error": {"type": "string"}, "message": {"type": "string"}, "status": {"type": "integer"}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }
