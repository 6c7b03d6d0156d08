"""Export closed window profiles through OpenTelemetry: OTLP log records plus OTLP metrics.

What: `OtlpExporter`, chosen by ``mlwatch.configure(endpoint="http://collector:4318")`` or the
standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``). For every
closed window profile it emits one OTLP log record (event ``mlwatch.profile``, body = the
profile's wire-format bytes, attributes from `mlwatch._convention`, see docs/otel-convention.md)
through the OpenTelemetry SDK: a `LoggerProvider` with a `SimpleLogRecordProcessor` and the
official OTLP/HTTP log exporter, sending through mlwatch's httpx transport. After the log records
it exports metrics built from the same windows (`mlwatch._otel_metrics`) with the official
OTLP/HTTP metric exporter. The resource honours ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` and carries a ``service.instance.id`` unique to the process (a new
one after a fork); the exporters honour ``OTEL_EXPORTER_OTLP_HEADERS``, ``_TIMEOUT``,
``_COMPRESSION`` and the certificate variables. With ``use_global_providers=True`` the records
go to the application's global LoggerProvider and the metrics become observable instruments on
its global MeterProvider instead.

Why this shape:

- `export()` runs on mlwatch's aggregator thread and never touches the network: it folds the
  profiles into the metric state and into a bounded pending state (`mlwatch._pending`), then wakes
  this exporter's own sender thread. A slow, failing or blackholed collector therefore never
  delays aggregation, let alone a request or an event loop.
- The sender sends each pending profile as one record through the synchronous
  `SimpleLogRecordProcessor`, so the outcome of each record is known: the official exporter
  retries what OTLP says is retryable (429, 502, 503, 504, connection errors; ``Retry-After``;
  exponential backoff with jitter; within the export timeout); when it gives up, the profile goes
  back to the pending state (merged with anything that arrived for the same window) and the next
  cycle waits a jittered, growing delay (`mlwatch._retry.Backoff`). Non-retryable answers (400,
  401, 403, 413, ...) are dropped at once and counted with their reason. (The SDK's
  `BatchLogRecordProcessor` would have added a second, unbounded-by-bytes queue and discarded
  the outcome.)
- Shutdown makes one final attempt with no retries, bounded by ``shutdown_timeout``; whatever is
  left is counted as dropped. Nothing here ever raises into the host: errors go to
  ``mlwatch.health()``.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from mlwatch import _convention as conv
from mlwatch._health import HEALTH, guard, logger
from mlwatch._otel_metrics import WindowMetrics
from mlwatch._pending import Entry, PendingProfiles, records_of
from mlwatch._retry import Backoff, Outcome, classify
from mlwatch._wire import FORMAT_VERSION
from mlwatch.profile import Profile

__all__ = ["DEFAULT_MAX_PENDING_BYTES", "DEFAULT_MAX_PENDING_WINDOWS", "OtlpExporter", "log_attributes"]

DEFAULT_MAX_PENDING_BYTES = 16 * 1024 * 1024
DEFAULT_MAX_PENDING_WINDOWS = 5
_CREDENTIAL_VARS = (
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_LOGS_CREDENTIAL_PROVIDER",
    "OTEL_PYTHON_EXPORTER_OTLP_HTTP_METRICS_CREDENTIAL_PROVIDER",
)


def log_attributes(p: Profile, key_id: str | None = None, payload_id: str | None = None) -> dict[str, str | int | float]:
    """The log record attributes of one profile (see docs/otel-convention.md)."""
    attrs: dict[str, str | int | float] = {conv.ATTR_MODEL: p.model, conv.ATTR_SEGMENT: p.segment_key}
    if p.version is not None:
        attrs[conv.ATTR_MODEL_VERSION] = p.version
    if p.window_start is not None:
        attrs[conv.ATTR_WINDOW_START] = float(p.window_start)
    if p.window_end is not None:
        attrs[conv.ATTR_WINDOW_END] = float(p.window_end)
    # The body's own version: 2 only when it carries model quality (see mlwatch._wire).
    attrs[conv.ATTR_FORMAT_VERSION] = FORMAT_VERSION if p.quality is not None and not p.quality.is_empty() else 1
    attrs[conv.ATTR_CALLS] = p.calls
    if key_id is not None:
        attrs[conv.ATTR_KEY_ID] = key_id
    if payload_id is not None:
        attrs[conv.ATTR_PAYLOAD_ID] = payload_id
    return attrs


def _version() -> str:
    from mlwatch import __version__

    return __version__


def _build_resource(service_name: str | None) -> Any:
    """OTel resource: SDK detectors (``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SERVICE_NAME``), our service name, a per-process instance id."""
    from opentelemetry.sdk.resources import Resource

    attrs: dict[str, str] = {}
    if service_name and service_name != "unknown_service":
        attrs["service.name"] = service_name
    resource = Resource.create(attrs)
    if "service.instance.id" not in resource.attributes:  # SDKs before 1.45 do not add one
        resource = resource.merge(Resource({"service.instance.id": str(uuid.uuid4())}))
    return resource


def _tls(signal: str) -> tuple[bool | str, str | tuple[str, str] | None]:
    """Certificate settings from the standard variables, as the default transport reads them."""
    env = os.environ

    def pick(name: str) -> str | None:
        return env.get(f"OTEL_EXPORTER_OTLP_{signal}_{name}") or env.get(f"OTEL_EXPORTER_OTLP_{name}")

    verify: bool | str = pick("CERTIFICATE") or True
    cert_file, key_file = pick("CLIENT_CERTIFICATE"), pick("CLIENT_KEY")
    cert: str | tuple[str, str] | None = (cert_file, key_file) if cert_file and key_file else cert_file
    return verify, cert


class _OutcomeExporter:
    """Wraps the official OTLP log exporter and remembers the result of the last export call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.last: Any = None

    def export(self, batch: Sequence[Any]) -> Any:
        self.last = self.inner.export(batch)
        return self.last

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        self.inner.shutdown()


class _Pipeline:
    """The OpenTelemetry objects of one process: logger, exporters, transports, resource."""

    def __init__(self, owner: OtlpExporter) -> None:
        self.owner = owner
        self.own_provider: Any = None  # our LoggerProvider (None when emitting to someone else's)
        self.foreign_provider: Any = None
        self.outcome: _OutcomeExporter | None = None
        self.log_transport: Any = None
        self.metric_transport: Any = None
        self.metric_exporter: Any = None
        self.resource: Any = None
        self.logger: Any = None
        self._build()

    # ------------------------------------------------------------------ construction
    def _build(self) -> None:
        o = self.owner
        if o.logger_provider is not None or o.use_global_providers:
            self._build_foreign()
            return
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

        self.resource = _build_resource(o.service_name)
        log_exporter, self.log_transport = self._exporter("LOGS")
        self.outcome = _OutcomeExporter(log_exporter)
        provider = LoggerProvider(resource=self.resource, shutdown_on_exit=False)
        provider.add_log_record_processor(SimpleLogRecordProcessor(self.outcome))  # type: ignore[arg-type]
        self.own_provider = provider
        self.logger = provider.get_logger(conv.SCOPE_NAME, _version())
        if o.metrics and o.meter_provider is None:
            self.metric_exporter, self.metric_transport = self._exporter("METRICS")
        elif o.metrics:
            o.window_metrics.register(o.meter_provider.get_meter(conv.SCOPE_NAME, _version()))

    def _build_foreign(self) -> None:
        from opentelemetry import _logs, metrics

        o = self.owner
        self.foreign_provider = o.logger_provider if o.logger_provider is not None else _logs.get_logger_provider()
        self.logger = self.foreign_provider.get_logger(conv.SCOPE_NAME, _version())
        if o.metrics:
            meter_provider = o.meter_provider if o.meter_provider is not None else metrics.get_meter_provider()
            o.window_metrics.register(meter_provider.get_meter(conv.SCOPE_NAME, _version()))

    def _exporter(self, signal: str) -> tuple[Any, Any]:
        """The official OTLP/HTTP exporter for `signal`, on our httpx transport when it accepts one."""
        o = self.owner
        if signal == "LOGS":
            from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as cls
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as cls  # type: ignore[assignment]
        path = "v1/logs" if signal == "LOGS" else "v1/metrics"
        url = f"{o.endpoint.rstrip('/')}/{path}" if o.endpoint else None
        kwargs: dict[str, Any] = {"endpoint": url, "headers": dict(o.headers) if o.headers else None, "timeout": o.timeout}
        if not any(os.environ.get(v) for v in _CREDENTIAL_VARS):  # a credential provider needs the requests transport
            try:
                from mlwatch._httpx_transport import HttpxTransport

                verify, cert = _tls(signal)
                resolved = url or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or ""
                if resolved.startswith("http://") and cert is None:
                    verify = False  # plain HTTP: skip loading the CA store (~0.1 s)
                transport = HttpxTransport(verify=verify, cert=cert)
                if o.final_deadline is not None:
                    transport.final, transport.deadline = True, o.final_deadline
                return cls(**kwargs, _transport=transport), transport
            except (ImportError, TypeError) as exc:  # an exporter without pluggable transports
                logger.info("mlwatch: OTLP exporter without pluggable transports (%r); using its default", exc)
        return cls(**kwargs), None

    # ------------------------------------------------------------------ use (sender thread)
    def set_final(self, deadline: float) -> None:
        for t in (self.log_transport, self.metric_transport):
            if t is not None:
                t.final, t.deadline = True, deadline

    def send(self, e: Entry) -> tuple[bool, Outcome | None]:
        """Emit one profile as a log record; (delivered, last HTTP outcome)."""
        o = self.owner
        p = e.profile
        now = time.time_ns()
        when = int(p.window_end * 1e9) if p.window_end is not None else now
        if self.outcome is not None:
            self.outcome.last = None
        if self.log_transport is not None:
            self.log_transport.take_outcome()
        if self.foreign_provider is not None and not self._provider_set():
            return False, Outcome(error="no_logger_provider")
        self.logger.emit(
            timestamp=when,
            observed_timestamp=now,
            body=e.data,
            attributes=log_attributes(p, o.hmac_key_id if o.hmac_key is not None else None, e.id),
            event_name=conv.EVENT_NAME,
        )
        if self.outcome is None:  # someone else's provider: handing over is all we can know
            return True, None
        from opentelemetry.sdk._logs.export import LogRecordExportResult

        outcome = self.log_transport.take_outcome() if self.log_transport is not None else None
        return self.outcome.last == LogRecordExportResult.SUCCESS, outcome

    def _provider_set(self) -> bool:
        """False while the global LoggerProvider is still the API's placeholder (records would vanish)."""
        provider = self.foreign_provider
        if self.owner.logger_provider is None:  # the global one: the application may set it late
            from opentelemetry import _logs

            provider = _logs.get_logger_provider()
        return type(provider).__name__ not in ("ProxyLoggerProvider", "NoOpLoggerProvider")

    def send_metrics(self) -> None:
        o = self.owner
        if self.metric_exporter is None:
            return
        from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData, ResourceMetrics, ScopeMetrics
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        metrics = o.window_metrics.to_sdk_metrics()
        scope = InstrumentationScope(conv.SCOPE_NAME, _version())
        data = MetricsData([ResourceMetrics(self.resource, [ScopeMetrics(scope, metrics, "")], "")])
        if self.metric_transport is not None:
            self.metric_transport.take_outcome()
        result = self.metric_exporter.export(data)
        if result != MetricExportResult.SUCCESS:
            outcome = self.metric_transport.take_outcome() if self.metric_transport is not None else None
            HEALTH.count_export_failure(f"metrics_{classify(outcome).reason}")
        else:
            HEALTH.count_export("otlp_metrics", 1)

    def force_flush(self, timeout: float) -> None:
        if self.foreign_provider is not None and hasattr(self.foreign_provider, "force_flush"):
            self.foreign_provider.force_flush(int(timeout * 1000))

    def shutdown(self) -> None:
        if self.own_provider is not None:
            self.own_provider.shutdown()  # closes the log exporter's transport
        if self.metric_exporter is not None:
            self.metric_exporter.shutdown()


class OtlpExporter:
    """Sends closed window profiles as OTLP log records (plus OTLP metrics) to a collector.

    - `endpoint`: the collector's base URL (``http://host:4318``; ``/v1/logs`` and ``/v1/metrics``
      are appended). None: the standard ``OTEL_EXPORTER_OTLP_*ENDPOINT`` variables, as in any OTel SDK.
    - `headers`, `timeout` (seconds per export, retries included): as the OTLP exporter's; None
      falls back to ``OTEL_EXPORTER_OTLP_HEADERS`` / ``_TIMEOUT`` (default 10 s).
    - `service_name`: ``service.name`` of the resource (default: ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``).
    - `metrics`: also export metrics built from the windows.
    - `use_global_providers`: emit into the application's global LoggerProvider and register
      observable instruments on its global MeterProvider, instead of mlwatch's own; or pass
      `logger_provider` / `meter_provider` explicitly.
    - `hmac_key`, `hmac_key_id`: sign every profile with HMAC-SHA256 (the collector verifies).
    - `reference`: ``{model: reference profile or path}``: per-feature drift gauges.
    - `max_pending_bytes`, `max_pending_windows`: the bounds of what waits for a collector.
    - `shutdown_timeout`: the bound on the final flush.
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        service_name: str | None = None,
        metrics: bool = True,
        use_global_providers: bool = False,
        logger_provider: Any = None,
        meter_provider: Any = None,
        hmac_key: bytes | str | None = None,
        hmac_key_id: str | None = None,
        reference: Mapping[str, Profile | str | os.PathLike[str]] | None = None,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        max_pending_windows: int = DEFAULT_MAX_PENDING_WINDOWS,
        shutdown_timeout: float = 2.0,
    ) -> None:
        self.endpoint = endpoint
        self.headers = dict(headers) if headers else None
        self.timeout = timeout
        self.service_name = service_name
        self.metrics = metrics
        self.use_global_providers = use_global_providers
        self.logger_provider = logger_provider
        self.meter_provider = meter_provider
        self.hmac_key = hmac_key.encode() if isinstance(hmac_key, str) else hmac_key
        self.hmac_key_id = (hmac_key_id or "default") if hmac_key is not None else None
        self.reference = dict(reference) if reference else None
        self.max_pending_bytes = max_pending_bytes
        self.max_pending_windows = max_pending_windows
        self.shutdown_timeout = shutdown_timeout
        self.final_deadline: float | None = None
        self._init_process_state()

    @classmethod
    def from_settings(cls, settings: Any) -> OtlpExporter:
        """The exporter `mlwatch.configure()` builds from `mlwatch.Settings`."""
        return cls(
            settings.endpoint,
            headers=settings.headers,
            timeout=settings.export_timeout,
            service_name=settings.service_name,
            metrics=settings.export_metrics,
            use_global_providers=settings.use_global_providers,
            hmac_key=settings.hmac_key,
            hmac_key_id=settings.hmac_key_id,
            reference=settings.reference,
            max_pending_bytes=settings.max_pending_bytes,
            max_pending_windows=settings.max_pending_windows,
            # leave the runtime's own bound (the same setting) room to see us finish
            shutdown_timeout=0.8 * settings.shutdown_timeout,
        )

    def _init_process_state(self) -> None:
        """Everything that belongs to one process (re-created in a forked child)."""
        self._pid = os.getpid()
        self._pending = PendingProfiles(max_bytes=self.max_pending_bytes, max_windows=self.max_pending_windows, encode=self._encode)
        self.window_metrics = WindowMetrics(reference=self.reference, health=self._health)
        self._pipe: _Pipeline | None = None
        self._pipe_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._requested = 0
        self._done = 0
        self._inflight = 0
        self._closed = False
        self._not_before = 0.0
        self._retry_after: float | None = None
        self._backoff = Backoff()

    # ------------------------------------------------------------------ Exporter protocol
    def start(self) -> None:
        """Set up the OpenTelemetry pipeline now (no network; ~0.3 s of imports once) and the sender thread.

        `mlwatch.configure()` calls this: the OTel SDK cannot be set up once the interpreter is
        exiting (its resource detection needs a thread pool), so a short-lived process that only
        closes its first window at exit must have done it before. Without it, the pipeline is set
        up on the sender thread when the first window closes.
        """
        try:
            if os.getpid() != self._pid:
                self._init_process_state()
            self._pipeline()
            self._ensure_thread()
        except Exception as exc:
            HEALTH.count_error("otlp_start", exc)

    def export(self, profiles: Sequence[Profile]) -> None:
        """Queue closed windows for the sender thread; returns at once, never raises."""
        if not profiles:
            return
        try:
            if os.getpid() != self._pid:  # a forked child: start clean, with its own instance id
                self._init_process_state()
            if self._closed:
                HEALTH.count_dropped("export_closed", sum(records_of(p) for p in profiles))
                return
            if self.metrics:
                self.window_metrics.observe(profiles)
            self._pending.add(profiles)
            self._ensure_thread()
            self._wake.set()
        except Exception as exc:
            HEALTH.count_error("otlp_export", exc)

    def force_flush(self, timeout: float | None = None) -> bool:
        """Send what is pending now (no backoff wait), waiting at most `timeout` seconds.

        True when nothing is left pending. Called by `mlwatch.flush()`.
        """
        try:
            if self._closed or os.getpid() != self._pid:
                return False
            budget = self.shutdown_timeout if timeout is None else timeout
            if not len(self._pending) and not self._inflight and self._pipe is None:
                return True
            self._ensure_thread()
            with self._cond:
                self._requested += 1
                gen = self._requested
            self._wake.set()
            with self._cond:
                done = self._cond.wait_for(lambda: self._done >= gen, budget)
            if done and self._pipe is not None:
                self._pipe.force_flush(budget)
            return done and not len(self._pending)
        except Exception as exc:
            HEALTH.count_error("otlp_flush", exc)
            return False

    def shutdown(self, timeout: float | None = None) -> None:
        """One final attempt (no retries) within `timeout` (default `shutdown_timeout`); what is left is counted as dropped."""
        if self._closed:
            return
        self._closed = True
        if os.getpid() != self._pid:  # a forked child's copy of the parent's exporter: nothing of ours
            return
        try:
            budget = self.shutdown_timeout if timeout is None else timeout
            deadline = time.monotonic() + budget
            self.final_deadline = deadline
            pipe = self._pipe
            if pipe is not None:
                pipe.set_final(deadline)
            self._stop.set()
            self._wake.set()
            thread = self._thread
            if thread is not None and thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
            elif len(self._pending):
                self._cycle()
            left = self._pending.clear()
            if left:
                HEALTH.count_dropped("export_shutdown", sum(records_of(e.profile) for e in left))
            if self._pipe is not None:
                self._pipe.shutdown()
        except Exception as exc:
            HEALTH.count_error("otlp_shutdown", exc)

    # ------------------------------------------------------------------ introspection
    @property
    def pending(self) -> int:
        """Profiles waiting for export, including those of the send in progress."""
        return len(self._pending) + self._inflight

    @property
    def pending_bytes(self) -> int:
        """Encoded bytes waiting for export."""
        return self._pending.nbytes

    def _health(self) -> dict[str, Any]:
        from mlwatch.lifecycle import health

        snap = health()
        snap["export_pending"] = self.pending
        return snap

    # ------------------------------------------------------------------ sender thread
    def _encode(self, p: Profile) -> bytes:
        return p.to_bytes(hmac_key=self.hmac_key, key_id=self.hmac_key_id) if self.hmac_key is not None else p.to_bytes()

    def _ensure_thread(self) -> None:
        with self._thread_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            if self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="mlwatch-otlp", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        self._pipeline()
        while True:
            try:
                stopping = self._stop.is_set()
                with self._cond:
                    gen = self._requested
                    flushing = gen > self._done
                now = time.monotonic()
                if stopping or flushing or (len(self._pending) and now >= self._not_before):
                    cpu = time.thread_time()
                    self._cycle()
                    HEALTH.worker_cpu_seconds += time.thread_time() - cpu  # mlwatch's cost includes sending
                    with self._cond:
                        self._done = max(self._done, gen)
                        self._cond.notify_all()
                    if stopping:
                        return
                    continue
                wait = max(0.0, self._not_before - now) if len(self._pending) else None
                self._wake.wait(wait)
                self._wake.clear()
            except Exception as exc:  # the loop itself must survive anything
                HEALTH.count_error("otlp_sender", exc)
                if self._stop.wait(1.0):
                    return

    def _pipeline(self) -> _Pipeline | None:
        if self._pipe is None:
            with self._pipe_lock, guard("otlp_setup"):
                if self._pipe is None:
                    self._pipe = _Pipeline(self)
                    if self.final_deadline is not None:  # shutdown began while we were building
                        self._pipe.set_final(self.final_deadline)
        return self._pipe

    def _cycle(self) -> None:
        """Send everything pending, oldest window first; then the metrics."""
        if not len(self._pending):
            return
        pipe = self._pipeline()
        if pipe is None:
            self._not_before = time.monotonic() + self._backoff.next_delay()
            return
        entries = self._pending.take()
        self._inflight = len(entries)
        keep: list[Entry] = []
        retry_after: float | None = None
        try:
            for i, e in enumerate(entries):
                try:
                    delivered, outcome = pipe.send(e)
                except Exception as exc:
                    HEALTH.count_error("otlp_send", exc)
                    delivered, outcome = False, None
                self._inflight = len(entries) - i - 1
                if delivered:
                    HEALTH.count_export("otlp_delivered", 1)
                    continue
                verdict = classify(outcome)
                HEALTH.count_export_failure(verdict.reason)
                if verdict.retry:
                    keep = entries[i:]  # the collector is struggling: stop here, try again later
                    retry_after = outcome.retry_after if outcome is not None else None
                    break
                HEALTH.count_dropped(f"export_{verdict.reason}", records_of(e.profile))
        finally:
            self._inflight = 0
            if keep:
                if self._closed:
                    HEALTH.count_dropped("export_shutdown", sum(records_of(e.profile) for e in keep))
                else:
                    self._pending.put_back(keep)
        if keep:
            self._not_before = time.monotonic() + self._backoff.next_delay(retry_after)
            return
        self._backoff.reset()
        self._not_before = 0.0
        if self.metrics and entries:
            with guard("otlp_metrics"):
                pipe.send_metrics()
