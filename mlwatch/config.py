"""`mlwatch.configure()`: process-wide settings, validated when given, never on the request path."""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol, runtime_checkable

from mlwatch._errors import ConfigError
from mlwatch.profile import Profile

__all__ = ["Exporter", "Settings"]


@runtime_checkable
class Exporter(Protocol):
    """Receives closed window profiles. Called on mlwatch's worker thread; must not block for long."""

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
    - ``shutdown_timeout``: the bound on the final flush at exit.
    """

    service_name: str = field(default_factory=_default_service_name)
    window_seconds: float = 60.0
    flush_interval: float = 0.5
    buffer_size: int = 20_000
    max_segments: int = 100
    data_dir: str = "./mlwatch-data"
    max_disk_bytes: int = 512 * 1024 * 1024
    exporters: tuple[Exporter, ...] | None = None
    shutdown_timeout: float = 5.0

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
