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
    assert reader.rollups_built == built + 1 and reader.rollups_extended == 1  # the hour, extended by the late row
    pool._idle = None
    assert _rows(reader, pool, 3600.0 + 30, 3 * 3600.0) == (6000, 60)  # 59 window parts + the second hour
    pool._idle = None
    assert _rows(reader, pool, 0.0, 86400.0)[0] == 6050  # a whole day: one day rollup


def _summary(reader: RangeReader, pool: WorkerPool, start: float, end: float) -> dict[str, object]:
    async def go() -> dict[str, object]:
        parts = await reader.parts("fraud", start, end, Filters())
        out: dict[str, object] = await pool.call("summary", [p.payload for p in parts])
        return out

    pool._idle = None  # a new event loop per asyncio.run
    return asyncio.run(go())


def _exact(summary: dict[str, object]) -> dict[str, object]:
    """What a merge gives exactly whatever the merge order: counts, and the numeric columns' moments
    up to rounding (sketch quantiles are randomized within their bounds)."""
    columns = summary["columns"]
    assert isinstance(columns, dict)
    return {
        "rows": summary["rows"],
        "columns": {n: (c["count"], c["missing"], round(c.get("mean") or 0.0, 9)) for n, c in columns.items()},
    }


def test_a_stale_rollup_is_extended_with_only_the_rows_it_lacks(store: Store, pool: WorkerPool) -> None:
    """Late rows in a rolled-up day and hour: each stale rollup is merged with the new rows alone
    (no hour rebuilt from its windows), and the answer is what the raw rows give."""
    day = 86400.0 * 3
    for i in range(90):
        _add(store, day + 60 * i, seed=i)
    reader = RangeReader(store, pool)
    assert _summary(reader, pool, day, day + 86400)["rows"] == 90 * 50
    assert _summary(reader, pool, day, day + 3600)["rows"] == 60 * 50
    built = reader.rollups_built  # the day, its two hours, the first hour
    for i, ws in enumerate((day + 60 * 7, day + 60 * 8, day + 60 * 70)):
        _add(store, ws, seed=500 + i, instance="i-late")
    whole = _summary(reader, pool, day, day + 86400)
    assert reader.rollups_built == built + 1 and reader.rollups_extended == 1  # the day alone, from 3 new rows
    assert _summary(reader, pool, day, day + 3600)["rows"] == 62 * 50
    assert reader.rollups_built == built + 2 and reader.rollups_extended == 2  # the hour, from its 2 new rows
    windows = _summary(reader, pool, day, day + 60 * 90 + 1)  # no whole hour or day inside: raw rows only
    assert _exact(whole) == _exact(windows) and whole["rows"] == 93 * 50


def test_a_row_committed_out_of_id_order_forces_a_full_rebuild(store: Store, pool: WorkerPool, db_url: str) -> None:
    """A rollup may be extended only when the rows it merged are exactly those with an id up to its
    highest: a row that becomes visible later with a lower id (PostgreSQL commits out of id order)
    makes the counts differ, so the rollup is rebuilt from its raw rows instead of silently
    missing that row."""
    from mlwatch.collector.store import open_store

    hour = 3600.0 * 50
    for i in range(30):
        _add(store, hour + 60 * i, seed=i)
    reader = RangeReader(store, pool)
    assert _summary(reader, pool, hour, hour + 3600)["rows"] == 30 * 50
    if db_url.startswith("postgresql"):
        import psycopg

        other = open_store(db_url)
        try:
            conn: psycopg.Connection[object] = other._conn  # type: ignore[attr-defined]
            with conn.transaction():  # takes the next id, committed only after a higher id is rolled up
                _add(other, hour + 60 * 40, seed=800, instance="i-slow")
                _add(store, hour + 60 * 41, seed=801, instance="i-fast")
                assert _summary(reader, pool, hour, hour + 3600)["rows"] == 31 * 50
        finally:
            other.close()
    else:  # SQLite writes one transaction at a time: give a new row a lower id after the fact
        _add(store, hour + 60 * 41, seed=801, instance="i-fast")
        assert _summary(reader, pool, hour, hour + 3600)["rows"] == 31 * 50
        _add(store, hour + 60 * 40, seed=800, instance="i-slow")
        with store._tx():  # type: ignore[attr-defined]
            store._execute("UPDATE profiles SET id = 0 WHERE instance = 'i-slow'")  # type: ignore[attr-defined]
    assert reader.rollups_extended == 1
    _add(store, hour + 60 * 42, seed=802, instance="i-fast")
    assert _summary(reader, pool, hour, hour + 3600)["rows"] == 33 * 50
    assert reader.rollups_extended == 1  # the hour was rebuilt in full


def test_a_row_arriving_while_a_rollup_is_built_is_counted_once(store: Store, pool: WorkerPool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A row stored between the query's planning and its reading of the raw rows is merged into the
    rollup; the rollup must say so, or extending it later would merge that row a second time."""
    hour = 3600.0 * 70
    for i in range(10):
        _add(store, hour + 60 * i, seed=i)
    real = store.raw_payloads
    sneaked: list[bool] = []

    def raw_payloads(key: SeriesKey, window_starts: object) -> object:
        if not sneaked:  # another instance's row for the same window lands now
            sneaked.append(True)
            _add(store, hour, seed=500, instance="i-meanwhile")
        return real(key, window_starts)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "raw_payloads", raw_payloads)
    reader = RangeReader(store, pool)
    assert _summary(reader, pool, hour, hour + 3600)["rows"] == 11 * 50
    _add(store, hour + 60 * 20, seed=501, instance="i-late")
    assert _summary(reader, pool, hour, hour + 3600)["rows"] == 12 * 50 and reader.rollups_extended == 1


def test_a_window_rollup_is_extended_with_its_own_rows_only(store: Store, pool: WorkerPool) -> None:
    """A window with rows from several instances has its own rollup (tier 0); when it gets another
    row it is extended with that row, not with rows of the hour's other windows."""
    ws = 3600.0 * 80 + 600
    _add(store, ws, seed=1, instance="i-1")
    _add(store, ws, seed=2, instance="i-2")
    reader = RangeReader(store, pool)
    assert _summary(reader, pool, ws, ws + 60)["rows"] == 2 * 50
    _add(store, ws + 60, seed=3, instance="i-1")  # the next window, a higher id
    _add(store, ws, seed=4, instance="i-3")
    assert _summary(reader, pool, ws, ws + 60)["rows"] == 3 * 50 and reader.rollups_extended == 1


def test_many_new_rows_rebuild_instead_of_extending(store: Store, pool: WorkerPool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond EXTEND_MAX_ROWS new rows, a stale rollup is rebuilt (memory stays bounded as for a build)."""
    from mlwatch.collector import query

    monkeypatch.setattr(query, "EXTEND_MAX_ROWS", 2)
    hour = 3600.0 * 60
    for i in range(10):
        _add(store, hour + 60 * i, seed=i)
    reader = RangeReader(store, pool)
    assert _summary(reader, pool, hour, hour + 3600)["rows"] == 10 * 50
    for i in range(3):
        _add(store, hour + 60 * (20 + i), seed=900 + i)
    assert _summary(reader, pool, hour, hour + 3600)["rows"] == 13 * 50 and reader.rollups_extended == 0
    _add(store, hour + 60 * 30, seed=999)
    assert _summary(reader, pool, hour, hour + 3600)["rows"] == 14 * 50 and reader.rollups_extended == 1


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


def test_backfilled_hours_are_rolled_up_as_they_arrive(tmp_path: Path) -> None:
    """Windows ingested after their hour ended are noted at ingest and rolled up, with their day, a
    moment after they stop arriving, not at the evaluator's next pass (an hour away here), so the
    first query over that day reads one stored profile."""
    config = CollectorConfig(db=str(tmp_path / "late.db"), evaluate_interval=3600)
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
        assert state.late_hours.models() == []
        body = c.get("/api/models/late/profile", params={"start": day, "end": day + 86400}).json()
        assert body["parts"] == 1 and body["profile"]["rows"] == 6 * 20
        assert state.reader.rollups_built == 3  # served from the day rollup: nothing rebuilt
        # One more late window in hour 2: the hour and the day are extended with it.
        late = make_profile(day + 3600 * 2 + 60 * 30, model="late", n=20, seed=999).to_bytes()
        assert c.post("/v1/logs", content=otlp_request([late]), headers=PROTOBUF_HEADERS).status_code == 200
        while state.reader.rollups_built < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.reader.rollups_built == 5 and state.reader.rollups_extended == 2
        body = c.get("/api/models/late/profile", params={"start": day, "end": day + 86400}).json()
        assert body["parts"] == 1 and body["profile"]["rows"] == 7 * 20


def test_late_hours_settle_when_quiet_or_after_the_longest_delay() -> None:
    """The backfill task waits for a pause in late windows, but not forever while they keep coming."""
    from mlwatch.collector.evaluator import LateHours

    async def go() -> None:
        late = LateHours()
        loop = asyncio.get_running_loop()
        waiter = loop.create_task(late.settled(0.2, 0.6))
        await asyncio.sleep(0.3)
        assert not waiter.done()  # nothing noted yet
        t0 = time.monotonic()
        late.note("m", 0.0, 7200.0)
        await waiter
        assert 0.15 < time.monotonic() - t0 < 1.5  # quiet for 0.2 s
        assert late.models() == ["m"] and late.take("m") == {0.0}
        waiter = loop.create_task(late.settled(0.2, 0.6))
        t0 = time.monotonic()
        while not waiter.done():  # a backfill that never pauses for 0.2 s
            late.note("m", 0.0, 10**6)
            await asyncio.sleep(0.05)
        assert 0.55 < time.monotonic() - t0 < 2.0
        late.note("m", 3600.0 * 5, 3600.0)  # an hour not over yet: not noted
        assert late.noted("m") == {0.0}

    asyncio.run(go())


def test_a_failing_late_hour_waits_for_the_next_pass_and_the_others_go_on() -> None:
    """One late hour whose roll-up fails: the other hours and the days without it are rolled up, the
    failed one is tried again only at the evaluator's next pass (not every second), and its day waits."""
    from types import SimpleNamespace

    from mlwatch.collector.evaluator import Evaluator, LateHours

    calls: list[tuple[float, float]] = []
    broken = {3600.0 * 30}

    async def parts(model: str, start: float, end: float, filters: Filters) -> list[object]:
        calls.append((start, end - start))
        if start in broken:
            raise RuntimeError("this hour cannot be merged")
        return []

    late = LateHours()
    state = SimpleNamespace(late_hours=late, reader=SimpleNamespace(parts=parts), metrics=SimpleNamespace(evaluation_errors=0))
    evaluator = Evaluator(state, 60.0)  # type: ignore[arg-type]
    hours = {3600.0 * h for h in (1, 2, 30, 31)}  # two on day 0, two on day 1 (hour 30 breaks)
    late.add("m", hours)

    asyncio.run(evaluator.roll_up_late_hours())
    assert calls == [(h, 3600.0) for h in sorted(hours)] + [(0.0, 86400.0)]  # day 1 waits for its failed hour
    assert state.metrics.evaluation_errors == 1 and late.models() == [] and late.noted("m") == {3600.0 * 30}
    calls.clear()
    asyncio.run(evaluator.roll_up_late_hours())
    assert calls == []  # not retried before the next pass
    late.retry_failed()
    broken.clear()
    asyncio.run(evaluator.roll_up_late_hours())
    assert calls == [(3600.0 * 30, 3600.0), (86400.0, 86400.0)] and late.noted("m") == set()


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
        time.sleep(1.5)  # long enough for another round of the backfill task, had anything been left
        # 26 hours and 2 days, each written once (the second day built its last two hours itself).
        assert state.reader.rollups_built == 28 and state.reader.rollups_extended == 0
        body = c.get("/api/models/long/profile", params={"start": day, "end": day + 2 * 86400}).json()
        assert body["parts"] == 2 and body["profile"]["rows"] == 26 * 10
        assert state.reader.rollups_built == 28
