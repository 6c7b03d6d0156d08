"""Range reads: which stored parts make up a merged profile, built from cached rollups when possible.

A query covers the windows whose start lies in [start, end). For each series (service, model,
version, segment) the windows are grouped into the largest aligned buckets (a UTC day, an hour)
that fit entirely inside the range, the rest stay single windows. Each group is served by its
rollup when the rollup is fresh (it merged exactly the raw rows now stored: same count, same
highest id), otherwise the rollup is rebuilt from the next smaller tier, recursively down to raw
rows, merged in the worker and stored. A day of minute windows is thus one stored profile once
warm, 24 hourly profiles after a late arrival in one hour, and 1,440 raw rows only when cold.
Missing rollups are built concurrently, as many at a time as there are query workers
(``--query-workers``): a cold day's 24 hours take about 1/N of the time on N workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio.to_thread

from mlwatch.collector.store import Filters, Rollup, SeriesKey, Store, WindowStat
from mlwatch.collector.worker import WorkerPool

__all__ = ["TIERS", "Part", "RangeReader"]

#: Rollup bucket widths in seconds, largest first (windows themselves are tier 0).
TIERS: tuple[float, ...] = (86400.0, 3600.0)
#: Whether the current task holds a query-worker slot (tasks started inside it inherit it).
_HOLDING: ContextVar[bool] = ContextVar("mlwatch_query_slot", default=False)

T = TypeVar("T")


@dataclass(frozen=True)
class Part:
    """One stored profile that is part of a query's answer: a raw row or a rollup."""

    key: SeriesKey
    tier: float
    bucket_start: float
    payload: bytes


class RangeReader:
    """Plans range reads over a `Store` and merges in a `WorkerPool` (the query pool)."""

    def __init__(self, store: Store, pool: WorkerPool) -> None:
        self.store = store
        self.pool = pool
        self.rollups_built = 0
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args)

    async def window_stats(self, model: str, start: float, end: float, filters: Filters) -> list[WindowStat]:
        return await self._db(self.store.window_stats, model, start, end, filters)

    async def parts(self, model: str, start: float, end: float, filters: Filters, *, tiers: Sequence[float] = TIERS) -> list[Part]:
        """Stored profiles whose merge is the merged profile of the range (empty when no data)."""
        stats = await self.window_stats(model, start, end, filters)
        by_series: dict[SeriesKey, list[WindowStat]] = {}
        for w in stats:
            by_series.setdefault(w.key, []).append(w)
        out: list[Part] = []
        for key in sorted(by_series):
            out.extend(await self._series_parts(key, by_series[key], start, end, tuple(tiers)))
        return out

    async def window_parts(self, model: str, start: float, end: float, filters: Filters) -> list[tuple[float, float, list[bytes]]]:
        """Per window in the range: (window_start, window_end, parts merging to that window across series)."""
        stats = await self.window_stats(model, start, end, filters)
        ends: dict[float, float] = {}
        for w in stats:
            ends[w.window_start] = max(ends.get(w.window_start, w.window_end), w.window_end)
        parts = await self.parts(model, start, end, filters, tiers=())
        grouped: dict[float, list[bytes]] = {}
        for p in parts:
            grouped.setdefault(p.bucket_start, []).append(p.payload)
        return [(ws, ends[ws], grouped[ws]) for ws in sorted(grouped)]

    async def _series_parts(
        self, key: SeriesKey, windows: Sequence[WindowStat], start: float, end: float, tiers: tuple[float, ...]
    ) -> list[Part]:
        groups: dict[tuple[float, float], list[WindowStat]] = {}
        for w in windows:
            chosen = (0.0, w.window_start)
            for tier in tiers:
                bucket = math.floor(w.window_start / tier) * tier
                if bucket >= start and bucket + tier <= end:
                    chosen = (tier, bucket)
                    break
            groups.setdefault(chosen, []).append(w)
        fresh = {(m.tier, m.bucket_start): (m.n_parts, m.max_id) for m in await self._db(self.store.rollup_meta, key, start, end)}
        out: list[Part] = []
        single: list[float] = []  # windows with one raw row: that row is the part
        todo: list[tuple[float, float, list[WindowStat], int, int]] = []
        for (tier, bucket), ws in sorted(groups.items()):
            n_parts, max_id = sum(w.count for w in ws), max(w.max_id for w in ws)
            if tier == 0 and n_parts == 1:
                single.append(bucket)
                continue
            if fresh.get((tier, bucket)) == (n_parts, max_id):
                payload = await self._db(self.store.rollup_payload, key, tier, bucket)
                if payload is not None:
                    out.append(Part(key, tier, bucket, payload))
                    continue
            todo.append((tier, bucket, ws, n_parts, max_id))
        if todo:  # stale or missing rollups: built at once, as many at a time as there are query workers
            builds = [asyncio.ensure_future(self._build(key, *job, tiers)) for job in todo]
            try:
                out.extend(await asyncio.gather(*builds))
            except BaseException:  # the first failure is the answer: the other builds stop (after their current worker call)
                for b in builds:
                    b.cancel()
                await asyncio.gather(*builds, return_exceptions=True)
                raise
        if single:
            async with self._slot():
                out.extend(Part(key, 0.0, ws, payload) for ws, payload in await self._db(self.store.raw_payloads, key, single))
        return out

    async def _build(
        self, key: SeriesKey, tier: float, bucket: float, ws: list[WindowStat], n_parts: int, max_id: int, tiers: tuple[float, ...]
    ) -> Part:
        """Merge one bucket from its raw rows (tier 0) or from the next smaller tier's parts, and store it as a rollup.

        An hour's windows are read and merged holding one query-worker slot throughout, so at most
        as many hours' raw payloads are in memory as there are workers; a day takes a slot only for
        its final merge, after its hours (built in parallel) are done.
        """
        smaller = tuple(t for t in tiers if t < tier)
        async with self._slot() if tier == 0 or not smaller else contextlib.nullcontext():
            if tier == 0:
                sub = [p for _, p in await self._db(self.store.raw_payloads, key, [bucket])]
                bucket_end = max(w.window_end for w in ws)
            else:
                sub = [p.payload for p in await self._series_parts(key, ws, bucket, bucket + tier, smaller)]
                bucket_end = bucket + tier
            async with self._slot():  # already held unless this is a day
                merged = sub[0] if len(sub) == 1 else await self.pool.call("merge", sub)
        await self._db(self.store.put_rollup, Rollup(key, tier, bucket, bucket_end, n_parts, max_id, merged))
        self.rollups_built += 1
        return Part(key, tier, bucket, merged)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of the query workers' slots, unless this task already holds one (nested work runs in it)."""
        if _HOLDING.get():
            yield
            return
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:  # one per event loop, sized to the pool
            self._slots, self._slots_loop = asyncio.Semaphore(max(1, self.pool.size)), loop
        async with self._slots:
            token = _HOLDING.set(True)
            try:
                yield
            finally:
                _HOLDING.reset(token)

    async def moving_reference(self, model: str, before: float, n_windows: int, filters: Filters) -> tuple[list[Part], float | None]:
        """Parts of the `n_windows` latest windows starting before `before`, and where they start."""
        starts = await self._db(self.store.window_starts_before, model, before, n_windows, filters)
        if not starts:
            return [], None
        return await self.parts(model, min(starts), before, filters), min(starts)
