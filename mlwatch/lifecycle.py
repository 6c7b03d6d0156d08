"""Process-wide controls: `configure()`, `flush()`, `shutdown()` and `health()`."""

from __future__ import annotations

from typing import Any

from mlwatch._health import HEALTH
from mlwatch._runtime import RUNTIME

__all__ = ["configure", "flush", "health", "shutdown"]


def configure(**options: Any) -> None:
    """Set process-wide options (see `mlwatch.config.Settings`); a wrong one raises `ConfigError`.

    May be called again: new settings apply to windows closed from then on.
    """
    RUNTIME.configure(RUNTIME.settings.updated(options))
    RUNTIME.restart()


def flush() -> int:
    """Aggregate everything buffered, close the current windows and export them now.

    Returns the number of profiles handed to the exporters.
    """
    return RUNTIME.flush()


def shutdown() -> None:
    """Stop the aggregator and flush once, within `shutdown_timeout`. Also runs at interpreter exit."""
    RUNTIME.shutdown()


def health() -> dict[str, Any]:
    """mlwatch's own counters: internal errors by stage, drops by reason, exports, cost, queue sizes."""
    snap = HEALTH.snapshot()
    snap["queued_records"] = sum(len(r.queue) for r in RUNTIME.recorders)
    snap["open_windows"] = sum(len(r.open) for r in RUNTIME.recorders)
    return snap
