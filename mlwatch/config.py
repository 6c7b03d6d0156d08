"""`mlwatch.configure()`: process-wide settings, validated when given, never on the request path."""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from mlwatch._errors import ConfigError
from mlwatch.profile import Profile

__all__ = ["Exporter", "Settings"]


@runtime_checkable
class Exporter(Protocol):
    """Receives closed window profiles. Called on mlwatch's worker thread; must not block for long.

    An exporter may also have a ``start()`` method (`mlwatch.otlp.OtlpExporter` has): it is then
    called by `configure()` and, in every process, when mlwatch's aggregator starts there (a
    forked worker included), so that the exporter is ready before the process's first window closes.
    """

    def export(self, profiles: Sequence[Profile]) -> None: ...

    def shutdown(self) -> None: ...


def _default_service_name() -> str:
    return os.environ.get("OTEL_SERVICE_NAME") or "unknown_service"


@dataclass(frozen=True)
class Settings:
    """Everything `configure()` accepts; see the README for what each one does.

    - ``service_name``: the service these models run in (default ``OTEL_SERVICE_NAME``).
    - ``window_seconds``: tumbling window length, aligned to the epoch so replicas merge exactly.
    - ``flush_interval``: seconds between two drains of the buffers by the aggregator thread.
    - ``buffer_size``: records buffered per monitored function; beyond, records are dropped and counted.
    - ``max_segments``: distinct segment values per model and window before ``__other__``.
    - ``data_dir``/``max_disk_bytes``: the local profile files written when no exporter is given.
    - ``exporters``: where closed windows go (default: local files under ``data_dir``).
    - ``shutdown_timeout``: the bound on the final flush at exit (and on ``mlwatch.flush()``'s wait for delivery).

    OpenTelemetry export (`mlwatch.otlp`; chosen when ``endpoint``, ``OTEL_EXPORTER_OTLP_ENDPOINT``
    or ``use_global_providers`` is set, instead of local files):

    - ``endpoint``: the OTLP/HTTP collector's base URL, e.g. ``http://collector:4318``.
    - ``headers``/``export_timeout``: request headers and the per-export timeout in seconds
      (default: ``OTEL_EXPORTER_OTLP_HEADERS`` / ``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s).
    - ``export_metrics``: also export OTLP metrics built from the windows.
    - ``use_global_providers``: use the application's global LoggerProvider and MeterProvider.
    - ``hmac_key``/``hmac_key_id``: sign each profile with HMAC-SHA256.
    - ``reference``: ``{model: path of a reference profile}`` for drift gauges.
    - ``max_pending_bytes``/``max_pending_windows``: what may wait for an unreachable collector.

    Outcomes (`mlwatch.outcomes`):

    - ``prediction_store_size``: predictions kept for joining labels by id (oldest evicted, counted).
    - ``prediction_ttl``: seconds a prediction waits for its label before it expires (counted).
    """

    service_name: str = field(default_factory=_default_service_name)
    window_seconds: float = 60.0
    flush_interval: float = 0.5
    buffer_size: int = 20_000
    max_segments: int = 100
    data_dir: str = "./mlwatch-data"
    max_disk_bytes: int = 512 * 1024 * 1024
    exporters: tuple[Exporter, ...] | None = None
    shutdown_timeout: float = 2.0
    endpoint: str | None = None
    headers: Mapping[str, str] | None = field(default=None, repr=False)  # may carry credentials
    export_timeout: float | None = None
    export_metrics: bool = True
    use_global_providers: bool = False
    hmac_key: bytes | str | None = field(default=None, repr=False)
    hmac_key_id: str | None = None
    reference: Mapping[str, str | os.PathLike[str]] | None = None
    max_pending_bytes: int = 16 * 1024 * 1024
    max_pending_windows: int = 5
    prediction_store_size: int = 100_000
    prediction_ttl: float = 7 * 86_400.0

    def __post_init__(self) -> None:
        if not isinstance(self.service_name, str) or not self.service_name:
            raise ConfigError(f"service_name must be a non-empty string, got {self.service_name!r}")
        check_window(self.window_seconds)
        _positive("flush_interval", self.flush_interval, hi=60.0)
        _positive("shutdown_timeout", self.shutdown_timeout, hi=3600.0)
        _int("buffer_size", self.buffer_size, 1, 10_000_000)
        _int("max_segments", self.max_segments, 1, 100_000)
        _int("max_disk_bytes", self.max_disk_bytes, 1024, 1 << 50)
        if not isinstance(self.data_dir, (str, os.PathLike)):
            raise ConfigError(f"data_dir must be a path, got {self.data_dir!r}")
        if self.exporters is not None:
            for exp in self.exporters:
                if not isinstance(exp, Exporter):
                    raise ConfigError(f"exporter {exp!r} has no export(profiles) and shutdown() methods")
        _check_otlp(self)
        _int("prediction_store_size", self.prediction_store_size, 1, 100_000_000)
        _positive("prediction_ttl", self.prediction_ttl, hi=366 * 86_400.0)

    def updated(self, options: dict[str, Any]) -> Settings:
        """A copy with `options` applied; unknown names raise `ConfigError` with a suggestion."""
        known = {f.name for f in fields(self)}
        for name in options:
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known options: {', '.join(sorted(known))}"
                raise ConfigError(f"unknown option {name!r}{hint}")
        if "exporters" in options and options["exporters"] is not None:
            exporters = options["exporters"]
            if not isinstance(exporters, (list, tuple)):
                raise ConfigError("exporters must be a list of exporters")
            options = {**options, "exporters": tuple(exporters)}
        return replace(self, **options)

    @property
    def otlp_enabled(self) -> bool:
        """Whether closed windows go out over OTLP: an endpoint, an OTLP endpoint variable, or global providers."""
        return bool(self.endpoint) or self.use_global_providers or any(
            os.environ.get(v) for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT")
        )


def _check_otlp(s: Settings) -> None:
    """The OpenTelemetry export options (see `mlwatch.otlp`)."""
    if s.endpoint is not None:
        parts = urlsplit(s.endpoint) if isinstance(s.endpoint, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"endpoint must be an http:// or https:// URL such as 'http://collector:4318', got {s.endpoint!r}")
    if s.headers is not None and (
        not isinstance(s.headers, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in s.headers.items())
    ):
        raise ConfigError(f"headers must be a dict of strings, got {s.headers!r}")
    if s.export_timeout is not None:
        _positive("export_timeout", s.export_timeout, hi=3600.0)
    for name in ("export_metrics", "use_global_providers"):
        if type(getattr(s, name)) is not bool:
            raise ConfigError(f"{name} must be True or False, got {getattr(s, name)!r}")
    if s.hmac_key is not None and (not isinstance(s.hmac_key, (bytes, str)) or len(s.hmac_key) < 16):
        raise ConfigError("hmac_key must be bytes or str of at least 16 bytes (use secrets.token_bytes(32))")
    if s.hmac_key_id is not None and (not isinstance(s.hmac_key_id, str) or not s.hmac_key_id):
        raise ConfigError(f"hmac_key_id must be a non-empty string, got {s.hmac_key_id!r}")
    if s.reference is not None:
        if not isinstance(s.reference, Mapping):
            raise ConfigError(f"reference must be a dict {{model: profile path}}, got {s.reference!r}")
        for model, path in s.reference.items():
            if not isinstance(model, str) or not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
                raise ConfigError(f"reference[{model!r}] must be the path of a profile file, got {path!r}")
    _int("max_pending_bytes", s.max_pending_bytes, 1024, 1 << 40)
    _int("max_pending_windows", s.max_pending_windows, 1, 10_000)


def check_window(window_seconds: Any) -> float:
    """Window lengths must divide a day evenly so that epoch-aligned windows line up everywhere."""
    if type(window_seconds) not in (int, float) or not math.isfinite(window_seconds):
        raise ConfigError(f"window_seconds must be a number, got {window_seconds!r}")
    if not 1 <= window_seconds <= 86_400 or 86_400 % window_seconds:
        raise ConfigError(f"window_seconds must divide 86400 (one day) and be at least 1 second, got {window_seconds!r}")
    return float(window_seconds)


def _positive(name: str, value: Any, *, hi: float) -> None:
    if type(value) not in (int, float) or not 0 < value <= hi:
        raise ConfigError(f"{name} must be a number in (0, {hi}], got {value!r}")


def _int(name: str, value: Any, lo: int, hi: int) -> None:
    if type(value) is not int or not lo <= value <= hi:
        raise ConfigError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
