"""Range reads: rollups give the same merged profile as raw rows, and late data makes them rebuild."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import mlwatch
from mlwatch._wire import WireLimits
from mlwatch.collector.config import CollectorConfig
from mlwatch.collector.query import RangeReader
from mlwatch.collector.store import Filters, ProfileRow, SeriesKey, Store
from mlwatch.collector.worker import WorkerPool, WorkerSettings

from .conftest import PROTOBUF_HEADERS, RunningCollector, make_profile, otlp_request


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    """One query worker for the module."""
    p = WorkerPool(WorkerSettings(hmac_keys=None, limits=WireLimits()), 1, 60.0, "query")
    yield p
    p.stop()


def _add(store: Store, ws: float, seed: int, instance: str = "i-1") -> mlwatch.Profile:
    import hashlib

    p = make_profile(ws, n=50, seed=seed)
    data = p.to_bytes()
    key = SeriesKey("svc", "fraud", "", "")
    store.add_profiles([ProfileRow("svc", instance, key, ws, ws + 60, hashlib.sha256(data).hexdigest(), p.rows, 0, 0, data)])
    return p


def _rows(reader: RangeReader, pool: WorkerPool, start: float, end: float) -> tuple[int, int]:
    async def go() -> tuple[int, int]:
        parts = await reader.parts("fraud", start, end, Filters())
        merged = await pool.call("summary", [p.payload for p in parts])
        return int(merged["rows"]), len(parts)

    return asyncio.run(go())


def test_rollups_match_raw_and_refresh_on_late_data(store: Store, pool: WorkerPool) -> None:
    """Two hours of minute windows merge to the same counts via rollups; a late window is included."""
    pool._idle = None  # a new event loop per asyncio.run
    for i in range(120):
        _add(store, 3600.0 + 60 * i, seed=i)
    reader = RangeReader(store, pool)
    rows, n_parts = _rows(reader, pool, 3600.0, 3 * 3600.0)
    assert rows == 120 * 50 and n_parts == 2  # two hourly rollups
    built = reader.rollups_built
    pool._idle = None
    assert _rows(reader, pool, 3600.0, 3 * 3600.0) == (6000, 2) and reader.rollups_built == built  # warm: nothing rebuilt
    _add(store, 3600.0 + 60 * 5, seed=999, instance="i-late")
    pool._idle = None
    assert _rows(reader, pool, 3600.0, 3 * 3600.0) == (6050, 2)
    assert reader.rollups_built == built + 2  # the hour and its window were rebuilt
    pool._idle = None
    assert _rows(reader, pool, 3600.0 + 30, 3 * 3600.0) == (6000, 60)  # 59 window parts + the second hour
    pool._idle = None
    assert _rows(reader, pool, 0.0, 86400.0)[0] == 6050  # a whole day: one day rollup


def test_cold_rollups_are_built_on_every_query_worker_at_once(store: Store) -> None:
    """A cold range's hours are merged concurrently, never more at once than there are query workers,
    and give what one worker gives."""
    for i in range(4 * 60):
        _add(store, 86400.0 + 60 * i, seed=i)
    two = WorkerPool(WorkerSettings(hmac_keys=None, limits=WireLimits()), 2, 60.0, "query")
    running = peak = 0
    real_call = two.call

    async def call(op: str, *args: object, **kw: object) -> object:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            return await real_call(op, *args, **kw)
        finally:
            running -= 1

    two.call = call  # type: ignore[method-assign]
    try:
        reader = RangeReader(store, two)
        assert _rows(reader, two, 86400.0, 86400.0 + 4 * 3600) == (4 * 60 * 50, 4)
        assert reader.rollups_built == 4 and peak == 2
    finally:
        two.stop()


def test_a_failing_rollup_build_fails_the_query_with_its_own_error(store: Store) -> None:
    """When one of the concurrent builds fails, the query raises that error (not a group of them) and the
    other builds stop: nothing is left running."""
    from mlwatch.collector.worker import WorkerError

    for i in range(3 * 60):
        _add(store, 86400.0 * 2 + 60 * i, seed=i)
    two = WorkerPool(WorkerSettings(hmac_keys=None, limits=WireLimits()), 2, 60.0, "query")
    calls = 0

    async def call(op: str, *args: object, **kw: object) -> object:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05 * calls)
        raise WorkerError("no_data", "a worker failed")

    two.call = call  # type: ignore[method-assign]
    try:
        reader = RangeReader(store, two)

        async def go() -> list[asyncio.Task[object]]:
            with pytest.raises(WorkerError, match="a worker failed"):
                await reader.parts("fraud", 86400.0 * 2, 86400.0 * 2 + 3 * 3600, Filters())
            return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

        assert asyncio.run(go()) == []
        assert reader.rollups_built == 0
    finally:
        two.stop()


def test_backfilled_hours_are_rolled_up_by_the_evaluator(tmp_path: Path) -> None:
    """Windows ingested after their hour ended are noted at ingest; the evaluator's next pass rolls
    up those hours and their day, so the first query over that day reads one stored profile."""
    config = CollectorConfig(db=str(tmp_path / "late.db"), evaluate_interval=0.2)
    day = 86400.0 * 100
    payloads = [make_profile(day + 3600 * h + 60 * i, model="late", n=20, seed=60 * h + i).to_bytes() for h in (2, 5) for i in range(3)]
    with RunningCollector(config) as running, running.client() as c:
        state = running.state
        r = c.post("/v1/logs", content=otlp_request(payloads), headers=PROTOBUF_HEADERS)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 60
        while state.reader.rollups_built < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.reader.rollups_built == 3  # the two hours, then their day
        assert state.late_hours.take("late") == set()
        body = c.get("/api/models/late/profile", params={"start": day, "end": day + 86400}).json()
        assert body["parts"] == 1 and body["profile"]["rows"] == 6 * 20
        assert state.reader.rollups_built == 3  # served from the day rollup: nothing rebuilt


def test_a_long_backfill_is_rolled_up_a_day_of_hours_per_pass(tmp_path: Path) -> None:
    """26 late hours over two days: the evaluator takes 24 hours per pass, then the rest; in the end
    both days are served from their day rollups."""
    config = CollectorConfig(db=str(tmp_path / "long.db"), evaluate_interval=0.2)
    day = 86400.0 * 200
    starts = [day + 3600 * h for h in range(13)] + [day + 86400 + 3600 * h for h in range(13)]
    payloads = [make_profile(ws, model="long", n=10, seed=i).to_bytes() for i, ws in enumerate(starts)]
    with RunningCollector(config) as running, running.client() as c:
        state = running.state
        assert c.post("/v1/logs", content=otlp_request(payloads), headers=PROTOBUF_HEADERS).status_code == 200
        deadline = time.monotonic() + 60
        while state.reader.rollups_built < 28 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.reader.rollups_built == 28  # 26 hours and 2 days
        body = c.get("/api/models/long/profile", params={"start": day, "end": day + 2 * 86400}).json()
        assert body["parts"] == 2 and body["profile"]["rows"] == 26 * 10
        assert state.reader.rollups_built == 28
