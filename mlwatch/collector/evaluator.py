"""The periodic job behind ``/metrics`` drift gauges and alert rules, which also keeps rollups warm.

Every `interval` seconds, for each model: make sure the previous complete hour and day are rolled
up, so range queries over them read one stored profile instead of hundreds; evaluate drift of its
latest window (merged across instances and series) against its reference (uploaded, else moving)
and publish the result to `CollectorMetrics.drift_results`. Then, when an alerts file is
configured, evaluate the alert rules on the windows completed since the last pass
(`mlwatch.collector.alerting`).

Past hours that receive windows late (a backfill, a replica catching up) are rolled up by a second
task as they arrive, not at the next pass: once no late window has come for `BACKFILL_QUIET`
seconds, or `BACKFILL_MAX_DELAY` seconds after the first one while a backfill keeps streaming, a
day's worth of hours at a time, then their days. Failures are logged and counted, never raised:
both loops keep going.
"""

from __future__ import annotations

import asyncio
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
#: Late hours rolled up per model at a time (a day of them), so queries get the query workers in between.
_LATE_HOURS_PER_PASS = 24
#: Seconds without a new late window before late hours are rolled up ...
BACKFILL_QUIET = 1.0
#: ... or at most this long after the first one, while a backfill keeps arriving.
BACKFILL_MAX_DELAY = 2.0


class Evaluator:
    """Runs `evaluate_once` every `interval` seconds until `stop`."""

    def __init__(self, state: CollectorState, interval: float) -> None:
        self.state = state
        self.interval = interval
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self.interval > 0 and not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._loop(), name="mlwatch-collector-evaluator"),
                loop.create_task(self._backfill_loop(), name="mlwatch-collector-backfill-rollups"),
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for outcome in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(outcome, Exception):  # a loop died: report it, and still let the collector shut down cleanly
                logger.error("mlwatch collector: a background task had failed: %r", outcome)
        self._tasks = []

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.evaluate_once()
            except Exception:  # the store unreachable, an alert channel failing: next pass
                self.state.metrics.evaluation_errors += 1
                logger.exception("mlwatch collector: evaluation pass failed")

    async def _backfill_loop(self) -> None:
        late = self.state.late_hours
        while True:
            await late.settled(BACKFILL_QUIET, BACKFILL_MAX_DELAY)
            await self.roll_up_late_hours()

    async def roll_up_late_hours(self) -> None:
        """Roll up a day's worth of each model's late hours, then the days they complete (the rest
        stay noted). An hour or day that fails is counted, logged, and kept apart until the
        evaluator's next pass (`LateHours.retry_failed`); the others go on."""
        for model in self.state.late_hours.models():
            await self._roll_up_late(model)

    async def evaluate_once(self) -> None:
        """One pass over every model; errors are counted per model and never escape."""
        state = self.state
        models = await anyio.to_thread.run_sync(state.store.models)
        for m in models:
            model = m["model"]
            try:  # rollups first: they do not depend on drift being computable
                await self._roll_up_latest(model, time.time())
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
        state.late_hours.retry_failed()  # late hours whose roll-up failed are retried once per pass
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

    async def _roll_up_latest(self, model: str, now: float) -> None:
        """Roll up the last complete hour and day, so queries over them stay warm.
        Cheap when already fresh: the freshness check reads only rollup metadata."""
        hour = math.floor(now / 3600) * 3600
        day = math.floor(now / 86400) * 86400
        await self.state.reader.parts(model, hour - 3600, hour, _ALL)
        await self.state.reader.parts(model, day - 86400, day, _ALL)

    async def _roll_up_late(self, model: str) -> None:
        """Roll up up to a day's worth of the model's late hours, then the days they are in, except
        days with hours still noted (a backfill still arriving, the rest of a long one, or a failed
        hour): those are rolled up with their last hours, not rebuilt every time."""
        late = self.state.late_hours
        noted = sorted(late.take(model))
        hours, later = noted[:_LATE_HOURS_PER_PASS], set(noted[_LATE_HOURS_PER_PASS:])
        late.add(model, later)
        for h in hours:
            if not await self._roll_up(model, h, 3600.0):
                late.fail(model, {h})
        now_day = math.floor(time.time() / 86400) * 86400
        busy = {math.floor(h / 86400) * 86400 for h in late.noted(model)}
        for d in sorted({math.floor(h / 86400) * 86400 for h in hours} - busy):
            if d + 86400 <= now_day and not await self._roll_up(model, d, 86400.0):
                late.fail(model, {h for h in hours if d <= h < d + 86400})

    async def _roll_up(self, model: str, start: float, width: float) -> bool:
        """Roll up [start, start + width); False (counted and logged) when that failed."""
        try:
            await self.state.reader.parts(model, start, start + width, _ALL)
        except Exception:
            self.state.metrics.evaluation_errors += 1
            logger.exception("mlwatch collector: rolling up %s from %s (%g s) failed", model, start, width)
            return False
        return True


class LateHours:
    """Complete hours that received windows after they ended, per model, for `Evaluator`'s backfill task.

    Hours whose roll-up failed are kept apart (`fail`) until `retry_failed`, once per evaluator
    pass, so a failing hour is neither retried every second nor in the way of the others.
    Bounded: beyond `limit` hours in all, more are counted in `dropped` and left to be rolled up
    by the first query that reads them. Noting and waiting happen on the event loop's thread.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self.dropped = 0
        self._hours: dict[str, set[float]] = {}
        self._failed: dict[str, set[float]] = {}
        self._pending = asyncio.Event()
        self._first = self._last = 0.0  # time.monotonic() of the first and the latest note since the last wait

    def note(self, model: str, window_start: float, now: float) -> None:
        """A window starting at `window_start` was stored at `now`: remember its hour if that hour is over."""
        hour = math.floor(window_start / 3600) * 3600
        if hour + 3600 <= now:
            self.add(model, {hour})

    def _size(self) -> int:
        return sum(map(len, self._hours.values())) + sum(map(len, self._failed.values()))

    def _put(self, where: dict[str, set[float]], model: str, hours: set[float]) -> None:
        known = where.setdefault(model, set())
        new = hours - known
        room = self.limit - self._size() if new else 0
        if len(new) > room:
            self.dropped += len(new) - max(room, 0)
            new = set(sorted(new)[: max(room, 0)])
        known |= new
        if not known:
            del where[model]

    def add(self, model: str, hours: set[float]) -> None:
        """Note `hours` of `model`: the backfill task rolls them up once late windows settle."""
        self._put(self._hours, model, hours)
        if hours:
            self._wake()

    def fail(self, model: str, hours: set[float]) -> None:
        """Keep `hours`, whose roll-up failed, apart until `retry_failed`."""
        self._put(self._failed, model, hours)

    def retry_failed(self) -> None:
        """Note the failed hours again (once per evaluator pass)."""
        failed, self._failed = self._failed, {}
        for model, hours in failed.items():
            self.add(model, hours)

    def _wake(self) -> None:
        self._last = time.monotonic()
        if not self._pending.is_set():
            self._first = self._last
            self._pending.set()

    def models(self) -> list[str]:
        return sorted(self._hours)

    def noted(self, model: str) -> set[float]:
        """The model's hours waiting to be rolled up, failed ones included."""
        return self._hours.get(model, set()) | self._failed.get(model, set())

    def take(self, model: str) -> set[float]:
        return self._hours.pop(model, set())

    async def settled(self, quiet: float, max_delay: float) -> None:
        """Return once hours are noted and either none was noted for `quiet` seconds or the first
        was noted `max_delay` seconds ago (a backfill still streaming in)."""
        await self._pending.wait()
        while True:
            now = time.monotonic()
            wait = min(self._last + quiet, self._first + max_delay) - now
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        self._pending.clear()
