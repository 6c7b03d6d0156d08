"""The periodic job behind ``/metrics`` drift gauges and alert rules, which also keeps rollups warm.

Every `interval` seconds, for each model: evaluate drift of its latest window (merged across
instances and series) against its reference (uploaded, else moving) and publish the result to
`CollectorMetrics.drift_results`; then make sure the previous complete hour and day are rolled
up, so range queries over them read one stored profile instead of hundreds. Then, when an alerts
file is configured, evaluate the alert rules on the windows completed since the last pass
(`mlwatch.collector.alerting`). Failures are logged and counted, never raised: the loop keeps going.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from mlwatch.collector.errors import HttpError
from mlwatch.collector.references import resolve_reference
from mlwatch.collector.store import Filters
from mlwatch.collector.worker import WorkerCrashed, WorkerError

if TYPE_CHECKING:
    from mlwatch.collector.app import CollectorState

__all__ = ["Evaluator", "LateHours"]

logger = logging.getLogger("mlwatch.collector")
_ALL = Filters()
#: Late hours rolled up per model and evaluator pass (a day of them).
_LATE_HOURS_PER_PASS = 24


class Evaluator:
    """Runs `evaluate_once` every `interval` seconds until `stop`."""

    def __init__(self, state: CollectorState, interval: float) -> None:
        self.state = state
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="mlwatch-collector-evaluator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.evaluate_once()

    async def evaluate_once(self) -> None:
        """One pass over every model; errors are counted per model and never escape."""
        state = self.state
        models = await anyio.to_thread.run_sync(state.store.models)
        for m in models:
            model = m["model"]
            try:  # rollups first: they do not depend on drift being computable
                await self._compact(model, time.time())
            except Exception:
                state.metrics.evaluation_errors += 1
                logger.exception("mlwatch collector: rolling up %s failed", model)
            try:
                result = await self._drift_latest(model)
            except (HttpError, WorkerError, WorkerCrashed) as exc:
                state.metrics.evaluation_errors += 1
                state.metrics.drift_results.pop(model, None)
                logger.info("mlwatch collector: no drift for %s: %s", model, exc)
                continue
            except Exception:  # never let the loop die
                state.metrics.evaluation_errors += 1
                logger.exception("mlwatch collector: drift evaluation of %s failed", model)
                continue
            state.metrics.evaluations += 1
            state.metrics.drift_results[model] = result
        if state.alerts is not None:
            await state.alerts.evaluate([m["model"] for m in models], time.time())

    async def _drift_latest(self, model: str) -> dict[str, Any]:
        state = self.state
        starts = await anyio.to_thread.run_sync(state.store.window_starts_before, model, math.inf, 1, _ALL)
        if not starts:
            raise HttpError(404, "not_found", "no windows")
        ws = starts[0]
        parts = await state.reader.parts(model, ws, math.nextafter(ws, math.inf), _ALL)
        ref, _ = await resolve_reference(state.reader, model, ws, _ALL, "auto", state.config.moving_reference_windows)
        report: dict[str, Any] = await state.query_pool.call("drift", ref, [p.payload for p in parts], {})
        return {
            "window_start": ws,
            "dataset_drift": report["dataset_drift"],
            "share": report["share"],
            "columns": report["columns"],
        }

    async def _compact(self, model: str, now: float) -> None:
        """Roll up the last complete hour and day, and every complete hour and day that received
        windows late (a backfill, a replica catching up), so queries over them stay warm.
        Cheap when already fresh: the freshness check reads only rollup metadata."""
        hour = math.floor(now / 3600) * 3600
        day = math.floor(now / 86400) * 86400
        reader = self.state.reader
        late = sorted(self.state.late_hours.take(model))
        # A long backfill is rolled up a day's worth of hours per pass: the query worker stays
        # free for the API in between.
        hours, later = set(late[:_LATE_HOURS_PER_PASS]), set(late[_LATE_HOURS_PER_PASS:])
        self.state.late_hours.add(model, later)
        try:
            for h in sorted(hours | {hour - 3600}):
                if h + 3600 <= hour:
                    await reader.parts(model, h, h + 3600, _ALL)
            for d in sorted({math.floor(h / 86400) * 86400 for h in hours} | {day - 86400}):
                if d + 86400 <= day:
                    await reader.parts(model, d, d + 86400, _ALL)
        except BaseException:
            self.state.late_hours.add(model, hours)  # try again next pass
            raise


class LateHours:
    """Complete hours that received windows after they ended, per model, for `Evaluator._compact`.

    Bounded: beyond `limit` hours in all, more are counted in `dropped` and left to be rolled up
    by the first query that reads them.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.dropped = 0
        self._hours: dict[str, set[float]] = {}
        self._size = 0

    def note(self, model: str, window_start: float, now: float) -> None:
        """A window starting at `window_start` was stored at `now`: remember its hour if that hour is over."""
        hour = math.floor(window_start / 3600) * 3600
        if hour + 3600 <= now:
            self.add(model, {hour})

    def add(self, model: str, hours: set[float]) -> None:
        known = self._hours.setdefault(model, set())
        for h in hours - known:
            if self._size >= self.limit:
                self.dropped += 1
                continue
            known.add(h)
            self._size += 1

    def take(self, model: str) -> set[float]:
        hours = self._hours.pop(model, set())
        self._size -= len(hours)
        return hours
