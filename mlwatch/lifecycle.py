"""Process-wide controls: `configure()`, `flush()`, `shutdown()` and `health()`."""

from __future__ import annotations

import time
from typing import Any

from mlwatch import _fast
from mlwatch._health import HEALTH
from mlwatch._runtime import RUNTIME

__all__ = ["configure", "flush", "health", "shutdown"]


def configure(**options: Any) -> None:
    """Set process-wide options (see `mlwatch.config.Settings`); a wrong one raises `ConfigError`.

    May be called again: new settings apply to windows closed from then on.
    """
    RUNTIME.configure(RUNTIME.settings.updated(options))
    RUNTIME.restart()
    RUNTIME.start_exporters()  # set OpenTelemetry up now (no network), not at interpreter exit


def flush(timeout: float | None = None) -> int:
    """Aggregate everything buffered, close the current windows and export them now.

    Exporters that send in the background (OTLP) are then given up to `timeout` seconds
    (default: the ``shutdown_timeout`` setting) to deliver. Returns the number of profiles
    handed to the exporters.
    """
    n = RUNTIME.flush()
    deadline = time.monotonic() + (RUNTIME.settings.shutdown_timeout if timeout is None else timeout)
    for exp in list(RUNTIME._exporters or []):
        force_flush = getattr(exp, "force_flush", None)
        if callable(force_flush):
            try:
                force_flush(max(0.0, deadline - time.monotonic()))
            except Exception as exc:
                HEALTH.count_error("flush", exc)
    return n


def shutdown() -> None:
    """Stop the aggregator and flush once, within `shutdown_timeout`. Also runs at interpreter exit."""
    RUNTIME.shutdown()


def health() -> dict[str, Any]:
    """mlwatch's own counters: internal errors by stage, drops by reason, exports, cost, queue sizes;
    and ``speedups``: whether the optional C loops were built (without them aggregation costs about
    twice the CPU)."""
    snap = HEALTH.snapshot()
    snap["queued_records"] = sum(len(r.queue) for r in RUNTIME.recorders)
    snap["open_windows"] = sum(len(r.open) for r in RUNTIME.recorders)
    pending = [getattr(e, "pending", 0) for e in RUNTIME._exporters or []]
    snap["export_pending"] = sum(n for n in pending if type(n) is int)  # profiles waiting for a collector
    snap["speedups"] = _fast.AVAILABLE
    return snap
