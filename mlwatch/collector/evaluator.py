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

__all__ = ["Evaluator"]

logger = logging.getLogger("mlwatch.collector")
_ALL = Filters()


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
            try:
                result = await self._drift_latest(model)
                await self._compact(model, time.time())
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
        """Roll up the last complete hour and day (cheap when already fresh)."""
        hour = math.floor(now / 3600) * 3600
        day = math.floor(now / 86400) * 86400
        await self.state.reader.parts(model, hour - 3600, hour, _ALL)
        await self.state.reader.parts(model, day - 86400, day, _ALL)
