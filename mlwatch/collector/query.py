"""Range reads: which stored parts make up a merged profile, built from cached rollups when possible.

A query covers the windows whose start lies in [start, end). For each series (service, model,
version, segment) the windows are grouped into the largest aligned buckets (a UTC day, an hour)
that fit entirely inside the range, the rest stay single windows. Each group is served by its
rollup when the rollup is fresh (it merged exactly the raw rows now stored: same count, same
highest id). A stale rollup is extended, merged with only the rows stored after it, when that is
provably exact (`RangeReader._extend`); otherwise it is rebuilt from the next smaller tier,
recursively down to raw rows, merged in the worker and stored. A day of minute windows is thus
one stored profile once warm, that profile plus the late rows after a late arrival, and 1,440
raw rows only when cold. Missing rollups are built concurrently, as many at a time as there are
query workers (``--query-workers``): a cold day's 24 hours take about 1/N of the time on N workers.
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
#: New raw rows merged into a stale rollup at most (beyond: rebuilt from the next smaller tier).
EXTEND_MAX_ROWS = 120

T = TypeVar("T")


@dataclass(frozen=True)
class Part:
    """One stored profile that is part of a query's answer: a raw row or a rollup.

    `n_parts` and `max_id` say which raw rows it merged: `n_parts` rows, none with an id above
    `max_id` (a raw row: 1 and its own id).
    """

    key: SeriesKey
    tier: float
    bucket_start: float
    payload: bytes
    n_parts: int
    max_id: int


class RangeReader:
    """Plans range reads over a `Store` and merges in a `WorkerPool` (the query pool)."""

    def __init__(self, store: Store, pool: WorkerPool) -> None:
        self.store = store
        self.pool = pool
        self.rollups_built = 0
        #: Of `rollups_built`, those made by merging a stale rollup with only the rows it lacked.
        self.rollups_extended = 0
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
        stored = {(m.tier, m.bucket_start): (m.n_parts, m.max_id) for m in await self._db(self.store.rollup_meta, key, start, end)}
        out: list[Part] = []
        single: list[float] = []  # windows with one raw row: that row is the part
        todo: list[tuple[float, float, list[WindowStat], int, int, bool]] = []
        for (tier, bucket), ws in sorted(groups.items()):
            n_parts, max_id = sum(w.count for w in ws), max(w.max_id for w in ws)
            if tier == 0 and n_parts == 1:
                single.append(bucket)
                continue
            if stored.get((tier, bucket)) == (n_parts, max_id):
                part = await self._fresh(key, tier, bucket, n_parts, max_id)
                if part is not None:
                    out.append(part)
                    continue
            todo.append((tier, bucket, ws, n_parts, max_id, (tier, bucket) in stored))
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
                rows = await self._db(self.store.raw_payloads, key, single)
            out.extend(Part(key, 0.0, ws, payload, 1, row_id) for ws, row_id, payload in rows)
        return out

    async def _fresh(self, key: SeriesKey, tier: float, bucket: float, n_parts: int, max_id: int) -> Part | None:
        """The stored rollup when it merged exactly `n_parts` rows up to `max_id` (None: missing or not that)."""
        r = await self._db(self.store.rollup, key, tier, bucket)
        if r is None or (r.n_parts, r.max_id) != (n_parts, max_id):
            return None
        return Part(key, tier, bucket, r.payload, r.n_parts, r.max_id)

    async def _build(
        self, key: SeriesKey, tier: float, bucket: float, ws: list[WindowStat], n_parts: int, max_id: int, stale: bool,
        tiers: tuple[float, ...],
    ) -> Part:
        """Bring one bucket's rollup up to date and store it.

        A `stale` rollup is extended when that is provably exact (`_extend`); otherwise the bucket is
        merged from its raw rows (tier 0) or from the next smaller tier's parts. An hour's windows are
        read and merged holding one query-worker slot throughout, so at most as many hours' raw
        payloads are in memory as there are workers; a day takes a slot only for its final merge,
        after its hours (built in parallel) are done. The stored numbers are those of the rows
        actually merged, which may be newer than the `window_stats` the query planned with.
        """
        bucket_end = bucket + tier if tier else max(w.window_end for w in ws)
        if stale:
            extended = await self._extend(key, tier, bucket, bucket_end)
            if extended is not None:
                return extended
        smaller = tuple(t for t in tiers if t < tier)
        async with self._slot() if tier == 0 or not smaller else contextlib.nullcontext():
            done = await self._fresh(key, tier, bucket, n_parts, max_id)  # built meanwhile by another query or the evaluator
            if done is not None:
                return done
            if tier == 0:
                sub = [Part(key, 0.0, w, p, 1, i) for w, i, p in await self._db(self.store.raw_payloads, key, [bucket])]
            else:
                sub = await self._series_parts(key, ws, bucket, bucket_end, smaller)
            async with self._slot():  # already held unless this is a day
                merged = sub[0].payload if len(sub) == 1 else await self.pool.call("merge", [p.payload for p in sub])
        return await self._store(key, tier, bucket, bucket_end, sum(p.n_parts for p in sub), max(p.max_id for p in sub), merged)

    async def _extend(self, key: SeriesKey, tier: float, bucket: float, bucket_end: float) -> Part | None:
        """The stale rollup merged with only the raw rows it lacks, or None when that cannot be proven exact.

        Raw rows are never deleted or changed, so when the rollup merged `n` rows with ids up to `m`
        and exactly `n` rows with an id up to `m` are stored now, it merged exactly those, and what
        it lacks is every row with a higher id. A row with a lower id that became visible after the
        rollup was built (PostgreSQL commits out of id order) breaks the equality, and so does
        anything unexpected: then the bucket is rebuilt in full. At most `EXTEND_MAX_ROWS` new rows
        are merged this way, so memory stays bounded as for a full build.
        """
        end = bucket + tier if tier else math.nextafter(bucket, math.inf)
        async with self._slot():
            old = await self._db(self.store.rollup, key, tier, bucket)
            if old is None:
                return None
            below, new = await self._db(self.store.rows_after, key, bucket, end, old.max_id, EXTEND_MAX_ROWS + 1)
            if below != old.n_parts or len(new) > EXTEND_MAX_ROWS:
                return None
            if not new:  # brought up to date meanwhile (by another query or the evaluator): it has every row
                return Part(key, tier, bucket, old.payload, old.n_parts, old.max_id)
            merged = await self.pool.call("merge", [old.payload, *(p for _, p in new)])
        part = await self._store(key, tier, bucket, bucket_end, old.n_parts + len(new), max(i for i, _ in new), merged)
        self.rollups_extended += 1
        return part

    async def _store(self, key: SeriesKey, tier: float, bucket: float, bucket_end: float, n_parts: int, max_id: int, merged: bytes) -> Part:
        await self._db(self.store.put_rollup, Rollup(key, tier, bucket, bucket_end, n_parts, max_id, merged))
        self.rollups_built += 1
        return Part(key, tier, bucket, merged, n_parts, max_id)

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
