"""mlwatch's own health: what it dropped, what failed inside it, what it cost.

Everything mlwatch does on or near the user's request path runs inside `guard(stage)`: any
exception is counted under that stage and logged at most once a minute per stage, never raised.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["HEALTH", "Health", "guard", "logger"]

logger = logging.getLogger("mlwatch")

#: Seconds between two log lines about the same internal failure stage.
LOG_INTERVAL = 60.0


class Health:
    """Process-wide counters. Increments take a lock: they happen off the hot path or on rare paths."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Zero every counter (after a fork: the child's health is its own)."""
        self._lock = threading.Lock()
        self.internal_errors: dict[str, int] = {}
        self.dropped: dict[str, int] = {}  # reason -> records or profiles dropped
        self.late_records = 0  # records whose window had already closed
        self.exported: dict[str, int] = {}  # exporter -> profiles delivered
        self.export_failures: dict[str, int] = {}  # reason -> failures
        self.aggregated_records = 0
        self.worker_cpu_seconds = 0.0
        self._last_log: dict[str, float] = {}

    def count_error(self, stage: str, exc: BaseException) -> None:
        with self._lock:
            self.internal_errors[stage] = self.internal_errors.get(stage, 0) + 1
            now = time.monotonic()
            due = now - self._last_log.get(stage, -LOG_INTERVAL) >= LOG_INTERVAL
            if due:
                self._last_log[stage] = now
        if due:
            logger.warning("mlwatch internal error in %s (counted; shown once a minute): %r", stage, exc, exc_info=exc)

    def count_dropped(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def count_export(self, exporter: str, n: int) -> None:
        with self._lock:
            self.exported[exporter] = self.exported.get(exporter, 0) + n

    def count_export_failure(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.export_failures[reason] = self.export_failures.get(reason, 0) + n

    def snapshot(self) -> dict[str, Any]:
        """A copy of every counter, for `mlwatch.health()` and the self-metrics."""
        with self._lock:
            return {
                "internal_errors": dict(self.internal_errors),
                "dropped": dict(self.dropped),
                "late_records": self.late_records,
                "exported": dict(self.exported),
                "export_failures": dict(self.export_failures),
                "aggregated_records": self.aggregated_records,
                "worker_cpu_seconds": self.worker_cpu_seconds,
            }


HEALTH = Health()


@contextmanager
def guard(stage: str) -> Iterator[None]:
    """Run mlwatch code that must never raise into the host: count and log instead."""
    try:
        yield
    except Exception as exc:
        HEALTH.count_error(stage, exc)
