"""Request telemetry shared by the ASGI and WSGI middleware: names, route matching, recording.

What: `HttpTelemetry` is everything the two middleware share. Per request it records one call into
an mlwatch recorder for the model ``http.server`` (configurable), segmented by
``http.request.method``, ``http.route`` (the route template, never the raw path) and
``http.response.status_code``, with the request duration as the call's latency, the exception
type (if the app raised) as its error, and three numeric columns: ``http.request.body.size``,
``http.response.body.size`` (bytes) and ``http.server.active_requests`` (requests in flight in
this process when the request started). Names follow the OpenTelemetry HTTP semantic conventions.
For the routes named in ``model_routes`` it also records one call of the named model, whose inputs
are the fields of the JSON request body and whose outputs are the fields of the JSON response.

Why through mlwatch's own pipeline: the request path pays what ``@monitor`` pays (two
``perf_counter_ns()`` and one bounded-buffer append, ~1 µs), not an OpenTelemetry ``record()``
per request (9-17 µs, DESIGN.md). Durations, sizes and counts are aggregated off the request path
into epoch-aligned window profiles, so every pre-fork worker's windows merge exactly at the
collector, and they leave as OTLP like every other profile.

The double-counting rule: a model named in ``model_routes`` that is also monitored in the
process by ``@mlwatch.monitor`` or ``mlwatch.observe`` (say on the route's handler) belongs to
that decorator; the middleware then records only the HTTP request for that route, never a second
model call. The check is per process, redone whenever a recorder is added, so decorating after
``instrument_app`` works.

Prediction ids (``prediction_id_header="X-Prediction-Id"``, opt-in): a model route's successful
response carries the id of its prediction, for ``mlwatch.log_outcome(prediction_id=...)`` when the
label arrives (`PredictionId`). When the route's model is monitored by a decorator with
``prediction_ids=True``, it is the id ``mlwatch.current_prediction_id()`` gives for the handler's
call (found through `mlwatch.outcomes.REQUEST_CALLS`, so a sync handler's worker thread works
too); when the middleware records the model itself, the id is minted here, and the prediction
stored for the label is read from the JSON response (`ResponsePrediction`): its prediction and
score fields as ``log_outcome`` reads a dict, or the whole value when it is not an object.

Other rules: requests answered 4xx were rejected before any model ran and are not model calls;
outputs are taken from 2xx JSON responses only; bodies over ``max_body_bytes`` (default 64 KiB)
are not kept (the call still counts). Methods outside the standard set are recorded as
``_OTHER`` (OpenTelemetry's rule), and requests no route matched have ``http.route`` =
``__missing__``, so the segment count stays bounded (``configure(max_segments=...)`` is the bound
per window, beyond which segments are folded into ``__other__``).

Pre-fork servers: the runtime is fork-safe (a worker starts with empty buffers, and its aggregator,
started by its first recorded request, starts the worker's own exporters: see
`mlwatch._runtime.Runtime.start_exporters`).

This module is the one place in ``mlwatch.integrations`` that reaches into mlwatch's runtime
(`mlwatch._runtime.Recorder` and ``RUNTIME``, `mlwatch.monitoring._options`, `mlwatch._health`):
the middleware measure a duration themselves and hand it to a recorder (the public ``observe()``
costs an object and a keyed dictionary lookup per request), and two recorder subclasses batch
what the generic aggregation would handle call by call (`RequestRecorder`, `ModelRecorder`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Generic, TypeVar

from mlwatch._errors import ConfigError
from mlwatch._extract import Binding
from mlwatch._health import HEALTH, logger
from mlwatch._runtime import ARGS, RUNTIME, Record, Recorder, args_of
from mlwatch.monitoring import _options
from mlwatch.outcomes import REQUEST_CALLS, PendingPrediction, RequestCalls, new_prediction, request_prediction_id

from ._body import BodyBuffer, json_fields, json_value

__all__ = [
    "ATTR_METHOD",
    "ATTR_ROUTE",
    "ATTR_STATUS",
    "COL_ACTIVE",
    "COL_REQUEST_SIZE",
    "COL_RESPONSE_SIZE",
    "DEFAULT_MAX_BODY_BYTES",
    "HTTP_MODEL",
    "HttpTelemetry",
    "ModelRecorder",
    "ModelRoute",
    "PathFilter",
    "PredictionId",
    "RequestRecorder",
    "ResponsePrediction",
    "RouteTable",
    "SEMCONV_METRICS",
    "normalize_method",
    "semconv_attributes",
]

#: The model name under which request telemetry is recorded.
HTTP_MODEL = "http.server"
ATTR_METHOD = "http.request.method"
ATTR_ROUTE = "http.route"
ATTR_STATUS = "http.response.status_code"
COL_REQUEST_SIZE = "http.request.body.size"
COL_RESPONSE_SIZE = "http.response.body.size"
COL_ACTIVE = "http.server.active_requests"
SEGMENT_BY = (ATTR_METHOD, ATTR_ROUTE, ATTR_STATUS)
DEFAULT_MAX_BODY_BYTES = 64 * 1024
#: The value of ``http.route`` when no route matched (404s, raw ASGI apps without routing).
NO_ROUTE = "__missing__"
#: The OpenTelemetry HTTP server metrics a request profile holds: name -> (where in the profile, unit).
#: ``mlwatch/_otel_metrics.py`` exports the latency as ``mlwatch.prediction.duration`` with the
#: segment as one attribute today; these are the names and units to export it under instead.
SEMCONV_METRICS: dict[str, tuple[str, str]] = {
    "http.server.request.duration": ("latency", "s"),
    "http.server.request.body.size": (COL_REQUEST_SIZE, "By"),
    "http.server.response.body.size": (COL_RESPONSE_SIZE, "By"),
    "http.server.active_requests": (COL_ACTIVE, "{request}"),
}

_KNOWN_METHODS = {m: m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY")}
_HTTP_CONFIG = _options(HTTP_MODEL, None, None, 1.0, None, {"exclude": SEGMENT_BY, "numeric": (COL_REQUEST_SIZE, COL_RESPONSE_SIZE, COL_ACTIVE)})[5]
_NO_KEY = ("_OTHER", NO_ROUTE, 0)

T = TypeVar("T")

#: Recorders the middleware made: never taken as a user's own monitoring of the model.
_MIDDLEWARE_RECORDERS: set[Recorder] = set()


def semconv_attributes(segment: Mapping[str, str]) -> dict[str, str | int]:
    """OpenTelemetry attributes of a request profile's segment: method, route (absent when none matched), status as an int."""
    attrs: dict[str, str | int] = {}
    method = segment.get(ATTR_METHOD)
    if method:
        attrs[ATTR_METHOD] = method
    route = segment.get(ATTR_ROUTE)
    if route and route not in (NO_ROUTE, "__other__", "*"):
        attrs[ATTR_ROUTE] = route
    status = segment.get(ATTR_STATUS, "")
    if status.isdigit() and status != "0":
        attrs[ATTR_STATUS] = int(status)
    return attrs


def normalize_method(method: str) -> str:
    """The method as OpenTelemetry records it: one of the standard methods, else ``_OTHER``."""
    return _KNOWN_METHODS.get(method) or _KNOWN_METHODS.get(method.upper(), "_OTHER")


# Starlette ``{name}`` / ``{name:conv}`` and Flask/Werkzeug ``<name>`` / ``<conv:name>`` placeholders.
_PLACEHOLDER = re.compile(r"\{[^}/]+\}|<[^>/]+>")


def _template_regex(template: str) -> re.Pattern[str]:
    parts = _PLACEHOLDER.split(template)
    holes = _PLACEHOLDER.findall(template)
    pattern = "".join(re.escape(p) + (_hole(h) if i < len(holes) else "") for i, (p, h) in enumerate(zip(parts, [*holes, ""], strict=True)))
    return re.compile(pattern + r"\Z")


def _hole(placeholder: str) -> str:
    """``path`` converters match slashes too; every other converter matches one segment."""
    return ".+" if placeholder.startswith("<path:") or placeholder.endswith(":path}") else "[^/]+"


class RouteTable(Generic[T]):
    """Route templates to values: exact paths by one dict lookup, templates by regex, in order."""

    def __init__(self, routes: Mapping[str, T]) -> None:
        self.exact: dict[str, tuple[str, T]] = {}
        self.patterns: list[tuple[re.Pattern[str], str, T]] = []
        for template, value in routes.items():
            if not isinstance(template, str) or not template.startswith("/"):
                raise ConfigError(f"a route must be a path template starting with '/', got {template!r}")
            if _PLACEHOLDER.search(template):
                self.patterns.append((_template_regex(template), template, value))
            else:
                self.exact[template] = (template, value)

    def __bool__(self) -> bool:
        return bool(self.exact or self.patterns)

    def match(self, path: str) -> tuple[str, T] | None:
        """(template, value) of the first route matching the raw `path`, or None."""
        hit = self.exact.get(path)
        if hit is not None:
            return hit
        for pattern, template, value in self.patterns:
            if pattern.match(path):
                return template, value
        return None


class PathFilter:
    """Paths to leave alone: exact paths, and prefixes written with a trailing ``*``."""

    def __init__(self, paths: Iterable[str]) -> None:
        if isinstance(paths, str):
            paths = [paths]
        self.exact: frozenset[str] = frozenset()
        exact: set[str] = set()
        prefixes: list[str] = []
        for p in paths:
            if not isinstance(p, str) or not p.startswith("/"):
                raise ConfigError(f"exclude_paths entries must be paths starting with '/', got {p!r}")
            if p.endswith("*"):
                prefixes.append(p[:-1])
            else:
                exact.add(p)
        self.exact = frozenset(exact)
        self.prefixes = tuple(prefixes)

    def __call__(self, path: str) -> bool:
        return path in self.exact or (bool(self.prefixes) and path.startswith(self.prefixes))


#: Records aggregated between two yields of the GIL: about 2 ms of work on this machine.
SLICE = 256


def _in_slices(records: list[Record], work: Callable[[list[Record]], None]) -> None:
    """`work` on slices of `records`, letting other threads run in between.

    The aggregator thread shares the GIL with the server's threads: one pass over a full buffer
    (a thousand requests) would hold it for 10-20 ms, and every request arriving meanwhile waits
    (CPython hands the GIL over only every 5 ms). ``time.sleep(0)`` releases it between slices.
    """
    for i in range(0, len(records), SLICE):
        if i:
            time.sleep(0)
        work(records[i : i + SLICE])


class RequestRecorder(Recorder):
    """The request recorder: segments by (method, route, status) in one grouping pass, then batches.

    mlwatch's generic segmentation splits every record's inputs on its own (about 13 µs a record
    on this machine); here the three segment values are popped from each buffered row (a copy
    the hot path made), records are grouped by window and segment with one tuple per record, and
    each group is folded with the unsegmented batch path (numeric columns as numpy arrays): about
    a third of the cost, on mlwatch's aggregator thread.
    """

    def aggregate(self, records: list[Record], wall_offset_ns: int) -> None:
        _in_slices(records, lambda part: self._aggregate(part, wall_offset_ns))

    def _aggregate(self, records: list[Record], wall_offset_ns: int) -> None:
        width = self.window_seconds or self.runtime.settings.window_seconds
        width_ns = int(width * 1e9)
        groups: dict[tuple[int, str, str, int], list[Record]] = {}
        for rec in records:
            start = rec[0] + wall_offset_ns
            args = args_of(rec) if rec[6] else ()
            row = args[0] if args else None
            if type(row) is dict:
                key = (start - start % width_ns, row.pop(ATTR_METHOD, "_OTHER"), row.pop(ATTR_ROUTE, NO_ROUTE), row.pop(ATTR_STATUS, 0))
            else:
                key = (start - start % width_ns, *_NO_KEY)
            group = groups.get(key)
            if group is None:
                groups[key] = [rec]
            else:
                group.append(rec)
        for (w_ns, method, route, status), recs in groups.items():
            window = w_ns / 1e9
            if window + width <= self.closed_upto:  # its window already went out: count it, keep it
                HEALTH.late_records += len(recs)
                window = self.closed_upto
            segment = {ATTR_METHOD: method, ATTR_ROUTE: str(route)[:200], ATTR_STATUS: str(status)}
            self._fold(self._profile_for(window, segment, width), recs, None)
        HEALTH.aggregated_records += len(records)


class ModelRecorder(Recorder):
    """A model route's recorder: its JSON bodies are parsed here, in one pass, then batched as dicts.

    Bodies arrive as raw ``bytes`` (not parsed on the request path; ``b""`` when no body was
    kept). Turning them into plain dicts before the generic aggregation lets it take its fast
    path (one list of dict rows per batch) instead of inspecting each call's arguments.
    """

    def aggregate(self, records: list[Record], wall_offset_ns: int) -> None:
        _in_slices(records, lambda part: self._aggregate(part, wall_offset_ns))

    def _aggregate(self, records: list[Record], wall_offset_ns: int) -> None:
        parsed: list[Record] = []
        for rec in records:
            args, result = (args_of(rec) if rec[6] else ()), rec[4]
            if args and type(args[0]) is bytes:
                args = (json_fields(args[0]),) if args[0] else ()
            if type(result) is bytes:
                result = json_fields(result) if result else None
            parsed.append((rec[0], rec[1], args, rec[3], result, rec[5], ARGS if rec[6] else 0))
        super().aggregate(parsed, wall_offset_ns)


class ModelRoute:
    """One model route: its template, the model's recorder, and the double-counting check."""

    __slots__ = ("_checked_at", "_deferred", "model", "recorder", "template")

    def __init__(self, template: str, recorder: Recorder) -> None:
        self.template = template
        self.recorder = recorder
        self.model = recorder.model
        self._checked_at = -1
        self._deferred = False

    def deferred(self) -> bool:
        """True when another recorder of the same model exists in the process (it owns the model)."""
        recorders = RUNTIME.recorders
        if len(recorders) != self._checked_at:
            self._checked_at = len(recorders)
            owner = any(r.model == self.model and r not in _MIDDLEWARE_RECORDERS for r in list(recorders))
            if owner and not self._deferred:
                logger.info(
                    "mlwatch: model %r is monitored in this process by @monitor/observe; "
                    "route %s records HTTP telemetry only (no second model call)", self.model, self.template,
                )
            self._deferred = owner
        return self._deferred


def _model_recorder(spec: str | Mapping[str, Any]) -> Recorder:
    if isinstance(spec, str):
        options: dict[str, Any] = {"model": spec}
    elif isinstance(spec, Mapping):
        options = dict(spec)
    else:
        raise ConfigError(f"model_routes values must be a model name or a dict of observe() options, got {spec!r}")
    try:
        model = options.pop("model")
    except KeyError:
        raise ConfigError(f"model_routes entry {spec!r} names no model") from None
    version = options.pop("version", None)
    segment_by = options.pop("segment_by", None)
    sample_rate = options.pop("sample_rate", 1.0)
    window_seconds = options.pop("window_seconds", None)
    opts = _options(model, version, segment_by, sample_rate, window_seconds, options)
    config = opts[5]
    recorder = ModelRecorder(
        RUNTIME, model=opts[0], version=opts[1], binding=Binding(("features",), 0, None), config=config,
        output_config=replace(config, categorical=config.categorical | {"predicted_class"}),  # as @monitor's
        segment_by=opts[2], sample_rate=opts[3], window_seconds=opts[4], feature_names=opts[6],
    )
    RUNTIME.add_recorder(recorder)
    _MIDDLEWARE_RECORDERS.add(recorder)
    return recorder


#: A header name (an RFC 9110 token).
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
#: The fields of a JSON response `log_outcome` reads as the prediction (see `outcomes._unpack_prediction`).
_PREDICTION_KEYS = ("score", "probability", "proba", "probabilities", "predicted_class", "prediction", "label", "class")


def _prediction_of(raw: bytes | None) -> Any:
    """What a model route's JSON response predicted: its prediction/score fields (a dict), its only
    field's value, or the whole document when it is not an object; None when unknown."""
    if raw is None:
        return None
    doc = json_value(raw)
    if not isinstance(doc, dict):
        return doc
    kept = {k: doc[k] for k in _PREDICTION_KEYS if k in doc}
    if kept:
        return kept
    return next(iter(doc.values())) if len(doc) == 1 else None


class ResponsePrediction(PendingPrediction):
    """A model route's prediction for the label join: the JSON response body, read once complete.

    The id goes out in the response's headers, before the body; `settle()` (when the last body
    chunk passes) keeps only the prediction and lets the buffer go, and a label that arrives
    sooner reads the body as it is then.
    """

    __slots__ = ("_body", "_value")

    def __init__(self, body: BodyBuffer) -> None:
        self._body: BodyBuffer | None = body
        self._value: Any = None

    def settle(self) -> None:
        body = self._body
        if body is not None:
            self._value = _prediction_of(body.peek())
            self._body = None

    def value(self) -> Any:
        body = self._body
        return self._value if body is None else _prediction_of(body.peek())


class PredictionId:
    """The prediction id of one request on a model route, for the response header (only with ``prediction_id_header``).

    `deferred`: the route's model is monitored by a decorator, whose call (noted in `box` while
    the app runs, see `REQUEST_CALLS`) gives the id; otherwise the middleware mints it and stores
    a `ResponsePrediction`. Nothing here raises: a failure is counted and the response goes out
    without the header.
    """

    __slots__ = ("box", "pending", "route", "started")

    def __init__(self, route: ModelRoute, deferred: bool) -> None:
        self.route = route
        self.box = RequestCalls() if deferred else None
        self.pending: ResponsePrediction | None = None
        self.started = time.time()

    def enter(self) -> Any:
        """Before the app runs: where the handler's monitored calls note themselves (a token for `leave`)."""
        return REQUEST_CALLS.set(self.box) if self.box is not None else None

    def leave(self, token: Any) -> None:
        """After the app returned (never raises)."""
        if token is not None:
            try:
                REQUEST_CALLS.reset(token)
            except Exception:  # not the context that set it (an unusual server): clear it, the request is over
                REQUEST_CALLS.set(None)

    def value(self, status: int, json_response: bool, request_body: BodyBuffer | None, response_body: BodyBuffer | None) -> str | None:
        """The id to send with a response starting now with `status`; None when it is no prediction."""
        if not 200 <= status < 300:
            return None
        try:
            if self.box is not None:
                return request_prediction_id(self.box, self.route.model)
            if not json_response or response_body is None:
                return None
            rec = self.route.recorder
            segment: dict[str, str] = {}
            if rec.segment_by:
                raw = request_body.peek() if request_body is not None else None
                segment = rec._segment_of(json_fields(raw, count=False) if raw is not None else None)
            self.pending = ResponsePrediction(response_body)
            return new_prediction(rec.model, rec.version, segment, self.pending, self.started)
        except Exception as exc:
            HEALTH.count_error("http_prediction_id", exc)
            return None

    def settle(self) -> None:
        """The response body is complete: keep the prediction, let the body go. Never raises."""
        if self.pending is not None:
            try:
                self.pending.settle()
            except Exception as exc:
                HEALTH.count_error("http_prediction_id", exc)


class HttpTelemetry:
    """What both middleware record, configured once (a wrong option raises `ConfigError` here).

    - `model_routes`: ``{"/predict": "fraud"}``; keys are route templates (``/items/{id}`` or
      ``/items/<int:id>``) matched against the raw path; values a model name or a dict of
      ``observe()`` options with a ``"model"`` key (``version``, ``segment_by``, ``sample_rate``, ...).
    - `exclude_paths`: paths recorded not at all (health checks); ``"/internal/*"`` is a prefix.
    - `http_model`: the model name of request telemetry (default ``http.server``); None records
      model routes only.
    - `max_body_bytes`: the most bytes of a model route's request or response body kept.
    - `prediction_id_header`: a header name (e.g. ``"X-Prediction-Id"``): a model route's 2xx
      answer carries its prediction's id there (`PredictionId`); None (the default) sends none.
    """

    def __init__(
        self,
        *,
        model_routes: Mapping[str, str | Mapping[str, Any]] | None = None,
        exclude_paths: Iterable[str] = (),
        http_model: str | None = HTTP_MODEL,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        prediction_id_header: str | None = None,
    ) -> None:
        if type(max_body_bytes) is not int or not 0 <= max_body_bytes <= 64 * 1024 * 1024:
            raise ConfigError(f"max_body_bytes must be an integer in [0, 64 MiB], got {max_body_bytes!r}")
        if prediction_id_header is not None and not (isinstance(prediction_id_header, str) and _HEADER_NAME.match(prediction_id_header)):
            raise ConfigError(f"prediction_id_header must be a header name such as 'X-Prediction-Id', got {prediction_id_header!r}")
        #: The prediction-id header's name, as given (WSGI) and lower-cased bytes (ASGI); None: no header.
        self.id_header = prediction_id_header
        self.id_header_bytes = prediction_id_header.lower().encode("ascii") if prediction_id_header is not None else b""
        if model_routes is not None and not isinstance(model_routes, Mapping):
            raise ConfigError(f"model_routes must be a dict {{route: model}}, got {model_routes!r}")
        self.max_body_bytes = max_body_bytes
        self.excluded = PathFilter(exclude_paths)
        self.models: RouteTable[ModelRoute] = RouteTable(
            {t: ModelRoute(t, _model_recorder(spec)) for t, spec in (model_routes or {}).items()}
        )
        self.has_model_routes = bool(self.models)
        self.http: Recorder | None = None
        if http_model is not None:
            if not isinstance(http_model, str) or not http_model:
                raise ConfigError(f"http_model must be a non-empty string or None, got {http_model!r}")
            self.http = RequestRecorder(
                RUNTIME, model=http_model, version=None, binding=Binding(("request",), 0, None), config=_HTTP_CONFIG,
                output_config=_HTTP_CONFIG, segment_by=SEGMENT_BY, sample_rate=1.0, window_seconds=None,
            )
            RUNTIME.add_recorder(self.http)
            _MIDDLEWARE_RECORDERS.add(self.http)
        self._record_http = self.http.record if self.http is not None else None

    def model_route(self, path: str) -> ModelRoute | None:
        """The model route `path` belongs to, unless its model is monitored elsewhere (never raises)."""
        route, _ = self.routes(path)
        return route

    def routes(self, path: str) -> tuple[ModelRoute | None, PredictionId | None]:
        """(the model route the middleware records for `path`, or None when there is none or its
        model is monitored elsewhere; the request's `PredictionId` when ids go in a header). Never raises."""
        if not self.models:
            return None, None
        try:
            hit = self.models.match(path)
            if hit is None:
                return None, None
            route = hit[1]
            deferred = route.deferred()
            return (None if deferred else route), (PredictionId(route, deferred) if self.id_header is not None else None)
        except Exception as exc:
            HEALTH.count_error("http_route", exc)
            return None, None

    def record(
        self,
        t0: int,
        duration: int,
        method: str,
        route: str | None,
        status: int,
        request_size: int | None,
        response_size: int,
        active: int,
        exc: BaseException | None,
    ) -> None:
        """One request (never raises: the recorder counts its own failures)."""
        record = self._record_http
        if record is None:
            return
        row = {
            ATTR_METHOD: method,
            ATTR_ROUTE: route or NO_ROUTE,
            ATTR_STATUS: status,
            COL_REQUEST_SIZE: request_size,
            COL_RESPONSE_SIZE: response_size,
            COL_ACTIVE: active,
        }
        record(t0, duration, (row,), None, None, exc)

    @staticmethod
    def record_model(
        route: ModelRoute, t0: int, duration: int, status: int, inputs: bytes | None, outputs: bytes | None, exc: BaseException | None
    ) -> None:
        """One model call of a model route, with its raw bodies (parsed by `ModelRecorder` off the request path).

        4xx answers are not model calls; outputs are taken from 2xx answers only.
        """
        if exc is None and 400 <= status < 500:
            return
        if not 200 <= status < 300:
            outputs = None
        route.recorder.record(t0, duration, (inputs or b"",), None, outputs, exc)

