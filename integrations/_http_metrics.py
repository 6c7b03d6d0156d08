"""Request telemetry shared by the ASGI and WSGI middleware: names, route matching, recording.

What: `HttpTelemetry` is everything the two middleware share. Per request it records one call into
an mlwatch recorder for the model ``http.server`` (configurable), segmented by
``http.request.method``, ``http.route`` (the route template, never the raw path),
``http.response.status_code``, ``url.scheme`` and, when the request failed, ``error.type``, with the
request duration as the call's latency, the exception type (if the app raised) as its error, and
three numeric columns: ``http.request.body.size``, ``http.response.body.size`` (bytes) and
``http.server.active_requests`` (requests in flight in this process when the request started).
Names follow the OpenTelemetry HTTP semantic conventions. For the routes named in ``model_routes``
it also records one call of the named model, whose inputs are the fields of the JSON request body
and whose outputs are the fields of the JSON response.

Why through mlwatch's own pipeline: the request path pays two ``perf_counter_ns()`` and one
bounded-buffer append of a flat tuple (`RequestRecorder.record_request`), not an OpenTelemetry
``record()`` per request (9-17 µs, DESIGN.md). Durations, sizes and counts are aggregated off the
request path into epoch-aligned window profiles, so every pre-fork worker's windows merge exactly
at the collector, and they leave as OTLP like every other profile.

OpenTelemetry metrics: from the closed request windows, the OTLP metrics export derives the
semantic-convention histograms ``http.server.request.duration`` (s, OpenTelemetry's advised
buckets), ``http.server.request.body.size`` and ``http.server.response.body.size`` (By, the SDK's
default buckets), with the attributes ``http.request.method``, ``url.scheme``, ``http.route``,
``http.response.status_code`` and ``error.type`` (`semconv_points`, registered with
`mlwatch._otel_metrics.add_view`), and reads ``http.server.active_requests`` ({request}, by
``http.request.method`` and ``url.scheme``) from the middleware's in-flight counts when it
collects (`mlwatch._otel_metrics.add_live`). Nothing of this runs per request. Bucket counts come
from the windows' KLL sketches: exact while a window's segment holds at most ~200 values, within
the sketch's rank error beyond; body-size sums are exact, duration sums estimated from the sketch.

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
per window, beyond which segments are folded into ``__other__``). ``error.type`` is the type of
the exception the app raised, else the status code for 5xx answers (as OpenTelemetry sets it).

Pre-fork servers: the runtime is fork-safe (a worker starts with empty buffers, and its aggregator,
started by its first recorded request, starts the worker's own exporters: see
`mlwatch._runtime.Runtime.start_exporters`).

This module is the one place in ``mlwatch.integrations`` that reaches into mlwatch's runtime
(`mlwatch._runtime.Recorder` and ``RUNTIME``, `mlwatch.monitoring._options`, `mlwatch._health`):
the middleware measure a duration themselves and hand it to a recorder (the public ``observe()``
costs an object and a keyed dictionary lookup per request), and two recorder subclasses batch
what the generic aggregation would handle call by call (`RequestRecorder`, `ModelRecorder`); and
to `mlwatch._otel_metrics` for the semantic-convention metrics.
"""

from __future__ import annotations

import random
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from itertools import repeat
from operator import itemgetter
from typing import Any, Generic, TypeVar

import numpy as np

from mlwatch import _fast
from mlwatch._errors import ConfigError
from mlwatch._extract import Binding
from mlwatch._gil import offer
from mlwatch._health import HEALTH, logger
from mlwatch._otel_metrics import Attrs, Distribution, MetricSpec, add_live, add_view
from mlwatch._runtime import ARGS, ONE_ARG, RUNTIME, Record, Recorder, by_window
from mlwatch.monitoring import _options
from mlwatch.outcomes import REQUEST_CALLS, PendingPrediction, RequestCalls, new_prediction, request_prediction_id
from mlwatch.profile import Profile
from mlwatch.profiling import update_profile_batches

from ._body import json_fields, json_rows, json_value

__all__ = [
    "ACTIVE_REQUESTS",
    "ATTR_ERROR",
    "ATTR_METHOD",
    "ATTR_ROUTE",
    "ATTR_SCHEME",
    "ATTR_STATUS",
    "COL_ACTIVE",
    "COL_REQUEST_SIZE",
    "COL_RESPONSE_SIZE",
    "DEFAULT_MAX_BODY_BYTES",
    "HTTP_MODEL",
    "HttpRecord",
    "HttpTelemetry",
    "ModelRecorder",
    "ModelRoute",
    "PathFilter",
    "PredictionId",
    "RequestRecorder",
    "ResponsePrediction",
    "RouteTable",
    "SEMCONV_HISTOGRAMS",
    "normalize_method",
    "semconv_attributes",
    "semconv_points",
]

#: The model name under which request telemetry is recorded.
HTTP_MODEL = "http.server"
ATTR_METHOD = "http.request.method"
ATTR_ROUTE = "http.route"
ATTR_STATUS = "http.response.status_code"
ATTR_SCHEME = "url.scheme"
ATTR_ERROR = "error.type"
COL_REQUEST_SIZE = "http.request.body.size"
COL_RESPONSE_SIZE = "http.response.body.size"
COL_ACTIVE = "http.server.active_requests"
#: A request profile's segment; ``error.type`` is added when the request failed.
SEGMENT_BY = (ATTR_METHOD, ATTR_ROUTE, ATTR_STATUS, ATTR_SCHEME)
DEFAULT_MAX_BODY_BYTES = 64 * 1024
#: The value of ``http.route`` when no route matched (404s, raw ASGI apps without routing).
NO_ROUTE = "__missing__"
_OTHER_SEGMENT = "__other__"

#: ``http.server.request.duration`` bucket bounds (s): the OpenTelemetry semantic conventions' advice.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
#: Body-size bucket bounds (By): the OpenTelemetry SDK's default (the conventions advise none).
SIZE_BUCKETS = (0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0, 10000.0)
REQUEST_DURATION = MetricSpec("http.server.request.duration", "histogram", "s", "Duration of HTTP server requests.", DURATION_BUCKETS)
REQUEST_BODY_SIZE = MetricSpec("http.server.request.body.size", "histogram", "By", "Size of HTTP server request bodies.", SIZE_BUCKETS)
RESPONSE_BODY_SIZE = MetricSpec("http.server.response.body.size", "histogram", "By", "Size of HTTP server response bodies.", SIZE_BUCKETS)
#: The semantic-convention histograms derived from request windows (see `semconv_points`).
SEMCONV_HISTOGRAMS = (REQUEST_DURATION, REQUEST_BODY_SIZE, RESPONSE_BODY_SIZE)
#: The semantic-convention up-down counter read from the middleware's in-flight counts.
ACTIVE_REQUESTS = MetricSpec("http.server.active_requests", "updown", "{request}", "Number of active HTTP server requests.")

_KNOWN_METHODS = {m: m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY")}
_HTTP_CONFIG = _options(HTTP_MODEL, None, None, 1.0, None, {"exclude": SEGMENT_BY, "numeric": (COL_REQUEST_SIZE, COL_RESPONSE_SIZE, COL_ACTIVE)})[5]

#: One request as the hot path buffers it, a flat tuple (collected young by the garbage collector):
#: (start ns, duration ns, method as received, route template or None, status (0: none sent),
#: error type or None, request body bytes or None (unknown), response body bytes, requests in
#: flight at arrival, URL scheme). Slots 0, 1 and 5 mean what they mean in a `Record`.
HttpRecord = tuple[int, int, str, str | None, int, str | None, int | None, int, int, str]

T = TypeVar("T")

#: Recorders the middleware made: never taken as a user's own monitoring of the model.
_MIDDLEWARE_RECORDERS: set[Recorder] = set()


def semconv_attributes(segment: Mapping[str, str]) -> dict[str, str | int]:
    """The OpenTelemetry HTTP server attributes of a request profile's segment.

    ``http.request.method`` (``_OTHER`` for a segment folded into ``__other__``), ``url.scheme``,
    ``http.route`` (absent when no route matched), ``http.response.status_code`` as an int (absent
    when none was sent) and ``error.type`` (the exception's type, else the status of a 5xx answer,
    absent otherwise). Values mlwatch does not know (folded segments) are left out.
    """
    attrs: dict[str, str | int] = {}
    method = segment.get(ATTR_METHOD)
    if method:
        attrs[ATTR_METHOD] = "_OTHER" if method == _OTHER_SEGMENT else method
    scheme = segment.get(ATTR_SCHEME)
    if scheme and scheme != _OTHER_SEGMENT:
        attrs[ATTR_SCHEME] = scheme
    route = segment.get(ATTR_ROUTE)
    if route and route not in (NO_ROUTE, _OTHER_SEGMENT, "*"):
        attrs[ATTR_ROUTE] = route
    status = segment.get(ATTR_STATUS, "")
    if status.isdigit() and status != "0":
        attrs[ATTR_STATUS] = int(status)
    error = segment.get(ATTR_ERROR)
    if error and error != _OTHER_SEGMENT:
        attrs[ATTR_ERROR] = error
    elif status.isdigit() and int(status) >= 500:
        attrs[ATTR_ERROR] = status
    return attrs


def semconv_points(p: Profile) -> list[tuple[MetricSpec, Attrs, Distribution]]:
    """The semantic-convention histogram points of one closed request window (see `mlwatch._otel_metrics.add_view`)."""
    attrs: Attrs = dict(semconv_attributes(p.segment))
    out: list[tuple[MetricSpec, Attrs, Distribution]] = []
    if p.latency is not None and p.latency.n:
        out.append((REQUEST_DURATION, attrs, Distribution(p.latency)))
    for spec, name in ((REQUEST_BODY_SIZE, COL_REQUEST_SIZE), (RESPONSE_BODY_SIZE, COL_RESPONSE_SIZE)):
        col = p.columns.get(name)
        num = col.numeric if col is not None else None
        if num is not None and num.n:
            out.append((spec, attrs, Distribution(num.kll, float(round(num.mean * num.n)))))  # sizes are whole bytes
    return out


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


#: Records per aggregation pass, the GIL offered between passes (and, within one, every 0.5 ms of
#: work: between body-parsing steps, columns, and inside the C loops). With the C loops the fixed
#: cost per pass and column weighs more: 1,024 instead of 256 took 4.8 % of the instructions per
#: request off (`benchmarks/bench_http_instructions.py`: 86,963 vs 90,831), and
#: `benchmarks/bench_gil_wait.py` shows a serving thread's p99 wait at 0.6-0.8 ms (1.3 ms before).
SLICE = 1024
#: A request record's length (an `HttpRecord`), its segment fields (method, route, status, error
#: type, scheme) and its numeric fields (duration, request size, response size, in-flight requests).
_WIDTH = 10
_SEGMENT_AT = (2, 3, 4, 5, 9)
_SEGMENT_FIELDS = itemgetter(*_SEGMENT_AT)
_NUMBERS_AT = (1, 6, 7, 8)


def _in_slices(records: list[Record], work: Callable[[list[Record]], None]) -> None:
    """`work` on slices of `records`, offering the GIL to other threads in between.

    The aggregator thread shares the GIL with the server's threads: one pass over a full buffer
    (a thousand requests) would hold it for 10-20 ms, and every request arriving meanwhile waits
    (CPython hands the GIL over only every 5 ms). See `mlwatch._gil`.
    """
    for i in range(0, len(records), SLICE):
        if i:
            offer()
        work(records[i : i + SLICE])


class RequestRecorder(Recorder):
    """The request recorder: a flat tuple per request on the hot path, grouped and folded column-wise off it.

    The hot path (`record_request`) appends one `HttpRecord` to the bounded buffer: no dict, no
    copy, no method normalisation. The aggregator groups records by window and segment (method,
    route, status, scheme, error type) with one tuple key per record and folds each group's
    durations and three numeric columns as whole arrays.
    """

    def __init__(self, runtime: Any, **options: Any) -> None:
        super().__init__(runtime, **options)
        self.record_request = self._make_record_request()

    def _make_record_request(self) -> Callable[[int, int, str, str | None, int, str | None, int | None, int, int, str], None]:
        """The hot-path function: buffers one request's `HttpRecord`; never raises, never blocks; a full buffer drops and counts."""
        queue = self.queue  # the same deque for the recorder's life; it holds HttpRecords, read only by _aggregate
        drop = self.drops.__next__
        append: Callable[[Any], None] = queue.append
        runtime = self.runtime
        count_error = HEALTH.count_error

        def record_request(
            t0: int, duration: int, method: str, route: str | None, status: int, error: str | None,
            request_size: int | None, response_size: int, active: int, scheme: str,
        ) -> None:
            try:
                if len(queue) >= runtime.capacity:
                    drop()
                    HEALTH.count_dropped("buffer_full")
                    return
                append((t0, duration, method, route, status, error, request_size, response_size, active, scheme))
                if len(queue) == runtime.batch_size:  # once, on crossing: Event.set() costs ~1 µs
                    runtime.wake.set()
                if not runtime.running:
                    runtime.start_worker()
            except Exception as e:
                count_error("capture", e)

        return record_request

    def aggregate(self, records: list[Record], wall_offset_ns: int) -> None:
        _in_slices(records, lambda part: self._aggregate(part, wall_offset_ns))

    def _aggregate(self, records: list[Any], wall_offset_ns: int) -> None:
        width = self.window_seconds or self.runtime.settings.window_seconds
        width_ns = int(width * 1e9)
        groups: dict[tuple[Any, ...], list[HttpRecord]] = {}
        fast = _fast.SPEEDUPS
        for window_ns, recs in by_window(records, wall_offset_ns, width_ns).items():
            if fast is not None and fast.same_items(recs, _WIDTH, _SEGMENT_AT):  # the usual case, told in one C pass
                groups[(window_ns, *_SEGMENT_FIELDS(recs[0]))] = recs
                continue
            segments = list(map(_SEGMENT_FIELDS, recs))
            if segments.count(segments[0]) == len(segments):  # the usual case: one route, status, method
                groups[(window_ns, *segments[0])] = recs
            else:
                for rec, segment in zip(recs, segments, strict=True):
                    groups.setdefault((window_ns, *segment), []).append(rec)
        for (w_ns, method, route, status, error, scheme), recs in groups.items():
            window = w_ns / 1e9
            if window + width <= self.closed_upto:  # its window already went out: count it, keep it
                HEALTH.late_records += len(recs)
                window = self.closed_upto
            segment = {
                ATTR_METHOD: normalize_method(str(method)),
                ATTR_ROUTE: NO_ROUTE if route is None else str(route)[:200],
                ATTR_STATUS: str(status),
                ATTR_SCHEME: str(scheme)[:32],
            }
            if error is not None:
                segment[ATTR_ERROR] = str(error)[:200]
            self._fold_requests(self._profile_for(window, segment, width), recs)
        HEALTH.aggregated_records += len(records)

    def _fold_requests(self, prof: Profile, recs: list[HttpRecord]) -> None:
        """One group's requests into its profile: calls, latency, errors, and the three size/in-flight columns."""
        n = len(recs)
        fast = _fast.SPEEDUPS
        numbers = np.empty((len(_NUMBERS_AT), n))
        columns: dict[str, Any]
        if fast is not None and fast.fill_item_floats(recs, _WIDTH, _NUMBERS_AT, numbers):  # one C pass; None read as NaN: missing either way
            lat = numbers[0] / 1e9
            columns = {COL_REQUEST_SIZE: numbers[1], COL_RESPONSE_SIZE: numbers[2], COL_ACTIVE: numbers[3]}
        else:
            _, durations, _, _, _, _, request_sizes, response_sizes, active, _ = zip(*recs, strict=True)
            lat = np.array(durations, dtype=np.float64) / 1e9
            columns = {COL_REQUEST_SIZE: list(request_sizes), COL_RESPONSE_SIZE: list(response_sizes), COL_ACTIVE: list(active)}
        prof.calls += n
        prof.record_latency(lat[lat >= 0], k=self.config.kll_k)
        error = recs[0][5]  # one error type per group (it is part of the segment)
        if error is not None:
            prof.errors[error] = prof.errors.get(error, 0) + n
        update_profile_batches(prof, [columns], self.config)


class ModelRecorder(Recorder):
    """A model route's recorder: its JSON bodies are parsed here, in one pass, then batched as dicts.

    Bodies arrive as raw ``bytes`` (not parsed on the request path; ``b""`` when no body was
    kept), buffered by `record_body` in the shape the generic hot path gives one bytes argument.
    Turning them into plain dicts before the generic aggregation lets it take its fast path (one
    list of dict rows per batch) instead of inspecting each call's arguments.
    """

    def __init__(self, runtime: Any, **options: Any) -> None:
        super().__init__(runtime, **options)
        self.record_body = self._make_record_body()

    def _make_record_body(self) -> Callable[[int, int, bytes, bytes | None, str | None], None]:
        """The hot-path function: one call with its raw request body, raw response body (None: no
        outputs) and error type; sampled as `sample_rate` says. Never raises, never blocks."""
        queue = self.queue
        drop = self.drops.__next__
        runtime = self.runtime
        sample_rate = self.sample_rate
        rand = random.random
        count_error = HEALTH.count_error

        def record_body(t0: int, duration: int, body: bytes, outputs: bytes | None, error: str | None) -> None:
            try:
                if len(queue) >= runtime.capacity:
                    drop()
                    HEALTH.count_dropped("buffer_full")
                    return
                if sample_rate < 1.0 and rand() >= sample_rate:  # counted, its data not kept
                    queue.append((t0, duration, None, None, None, error, 0))
                else:
                    queue.append((t0, duration, body, None, outputs if error is None else None, error, ONE_ARG))
                if len(queue) == runtime.batch_size:
                    runtime.wake.set()
                if not runtime.running:
                    runtime.start_worker()
            except Exception as e:
                count_error("capture", e)

        return record_body

    def aggregate(self, records: list[Record], wall_offset_ns: int) -> None:
        _in_slices(records, lambda part: self._aggregate(part, wall_offset_ns))

    def _aggregate(self, records: list[Record], wall_offset_ns: int) -> None:
        starts, durations, bodies, _, answers, errors, kept_flags = zip(*records, strict=True)
        n = len(records)
        if kept_flags.count(ONE_ARG) == n and all(bodies):  # the usual case: every call kept, with a body
            inputs = json_rows(bodies)
            offer()
            if answers.count(None) == n:
                outputs: Iterable[Any] = answers
            elif all(answers) and set(map(type, answers)) == {bytes}:
                outputs = json_rows(answers)
            else:
                outputs = [json_fields(a) if type(a) is bytes and a else None for a in answers]
            offer()
            super().aggregate(list(zip(starts, durations, inputs, repeat(None, n), outputs, errors, kept_flags, strict=True)), wall_offset_ns)
            return
        kept = [rec for rec in records if rec[6]]  # sampled out: counted, nothing kept
        inputs_it = iter(json_rows([rec[2] for rec in kept if rec[2]]))
        offer()
        outputs_it = iter(json_rows([rec[4] for rec in kept if type(rec[4]) is bytes and rec[4]]))
        offer()
        parsed: list[Record] = []
        append = parsed.append
        for rec in records:  # in buffer order, sampled-out records included (they count as calls)
            if not rec[6]:
                append(rec)
                continue
            result = rec[4]
            if type(result) is bytes:
                result = next(outputs_it) if result else None
            if rec[2]:  # one dict argument: the generic aggregation's fast path
                append((rec[0], rec[1], next(inputs_it), None, result, rec[5], ONE_ARG))
            else:  # no body kept (none sent, or over the cap): a call without inputs
                append((rec[0], rec[1], (), None, result, rec[5], ARGS))
        super().aggregate(parsed, wall_offset_ns)


class ModelRoute:
    """One model route: its template, the model's recorder, and the double-counting check."""

    __slots__ = ("_checked_at", "_deferred", "model", "recorder", "sink", "template")

    def __init__(self, template: str, recorder: ModelRecorder) -> None:
        self.template = template
        self.recorder = recorder
        self.model = recorder.model
        self._checked_at = -1
        self._deferred = False
        #: Where the C tap buffers this route's calls (see `mlwatch.integrations._tap`); False when
        #: the recorder samples, which its Python function decides.
        self.sink: tuple[Any, ...] | bool = (
            (recorder.runtime, recorder.queue, recorder.queue.append, ONE_ARG) if recorder.sample_rate >= 1.0 else False
        )

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


def _model_recorder(spec: str | Mapping[str, Any]) -> ModelRecorder:
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

    def __init__(self, peek: Callable[[], bytes | None]) -> None:
        self._body: Callable[[], bytes | None] | None = peek
        self._value: Any = None

    def settle(self) -> None:
        body = self._body
        if body is not None:
            self._value = _prediction_of(body())
            self._body = None

    def value(self) -> Any:
        body = self._body
        return self._value if body is None else _prediction_of(body())


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

    def value(
        self, status: int, json_response: bool, request_body: Callable[[], bytes | None] | None, response_body: Callable[[], bytes | None] | None
    ) -> str | None:
        """The id to send with a response starting now with `status`; None when it is no prediction.
        The bodies are given by functions reading what is kept of them so far."""
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
                raw = request_body() if request_body is not None else None
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

    The middleware record a request with `record` (the request recorder's hot-path function, None
    when `http_model` is None) and keep the requests in flight in `in_flight` ({(method as
    received, scheme): count}, under `lock` where requests run on several threads), which the
    OTLP metrics read as ``http.server.active_requests``.
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
        self.http: RequestRecorder | None = None
        self.in_flight: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()
        if http_model is not None:
            if not isinstance(http_model, str) or not http_model:
                raise ConfigError(f"http_model must be a non-empty string or None, got {http_model!r}")
            self.http = RequestRecorder(
                RUNTIME, model=http_model, version=None, binding=Binding(("request",), 0, None), config=_HTTP_CONFIG,
                output_config=_HTTP_CONFIG, segment_by=SEGMENT_BY, sample_rate=1.0, window_seconds=None,
            )
            RUNTIME.add_recorder(self.http)
            _MIDDLEWARE_RECORDERS.add(self.http)
            add_view(http_model, SEMCONV_HISTOGRAMS, semconv_points)
            _TELEMETRIES.add(self)
            add_live(ACTIVE_REQUESTS, _active_requests)
        self.record = self.http.record_request if self.http is not None else None
        #: Where the C tap buffers request records (see `mlwatch.integrations._tap`), None without them.
        self.sink = (self.http.runtime, self.http.queue, self.http.queue.append) if self.http is not None else None

    def arrive(self, method: str, scheme: str) -> tuple[str, str]:
        """A request arrives: counted in `in_flight` under its key, returned (the caller takes it off when it leaves).

        The key is the (method, scheme) as received while that pair is known; a pair not seen
        before is normalised first (a standard method, else ``_OTHER``; ``http``/``https``, else
        ``_OTHER``), so that clients cannot grow the counts. Callers on several threads hold `lock`.
        """
        in_flight = self.in_flight
        key = (method, scheme)
        n = in_flight.get(key)
        if n is None:
            key = (normalize_method(method), scheme if scheme in ("http", "https") else "_OTHER")
            n = in_flight.get(key, 0)
        in_flight[key] = n + 1
        return key

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
        except Exception as exc:
            HEALTH.count_error("http_route", exc)
            return None, None
        return self.for_route(hit[1]) if hit is not None else (None, None)

    def for_route(self, route: ModelRoute) -> tuple[ModelRoute | None, PredictionId | None]:
        """`routes` for a request to `route`, already matched. Never raises."""
        try:
            deferred = route.deferred()
            return (None if deferred else route), (PredictionId(route, deferred) if self.id_header is not None else None)
        except Exception as exc:
            HEALTH.count_error("http_route", exc)
            return None, None

    @staticmethod
    def record_model(
        route: ModelRoute, t0: int, duration: int, status: int, inputs: bytes | None, outputs: bytes | None, error: str | None
    ) -> None:
        """One model call of a model route, with its raw bodies (parsed by `ModelRecorder` off the request path).

        4xx answers are not model calls; outputs are taken from 2xx answers only.
        """
        if error is None and 400 <= status < 500:
            return
        route.recorder.record_body(t0, duration, inputs or b"", outputs if 200 <= status < 300 else None, error)


#: Every HttpTelemetry with request telemetry in the process, for ``http.server.active_requests``.
_TELEMETRIES: weakref.WeakSet[HttpTelemetry] = weakref.WeakSet()


def _active_requests() -> list[tuple[Attrs, int]]:
    """``http.server.active_requests`` now: the in-flight counts of every middleware, by method and scheme."""
    counts: dict[tuple[str, str], int] = {}
    for telemetry in list(_TELEMETRIES):
        with telemetry.lock:
            items = list(telemetry.in_flight.items())
        for (method, scheme), n in items:
            key = (normalize_method(method), scheme)
            counts[key] = counts.get(key, 0) + n
    return [({ATTR_METHOD: method, ATTR_SCHEME: scheme}, n) for (method, scheme), n in sorted(counts.items())]
