"""The store on SQLite and on a real PostgreSQL server: migrations, idempotent ingest, rollups, references."""

from __future__ import annotations

import pytest

from mlwatch._errors import ConfigError
from mlwatch.collector.migrations import latest_version
from mlwatch.collector.store import Filters, ProfileRow, ReferenceRow, Rollup, SeriesKey, Store, open_store

KEY = SeriesKey("svc", "fraud", "v1", "")


def _row(ws: float, payload: bytes, instance: str = "i-1", key: SeriesKey = KEY) -> ProfileRow:
    return ProfileRow(
        service=key.service, instance=instance, key=key, window_start=ws, window_end=ws + 60,
        content_hash=payload.hex(), n_rows=10, calls=5, errors=1, payload=payload,
        features=(("input", "amount", "numeric"), ("output", "score", "numeric")),
    )


def test_migrations_are_versioned_and_idempotent(db_url: str) -> None:
    """Opening twice applies the schema once; schema_version records it."""
    first = open_store(db_url)
    assert first.schema_version() == latest_version()
    first.close()
    second = open_store(db_url)
    assert second.schema_version() == latest_version()
    second.close()


def test_postgres_payloads_skip_toast_compression(db_url: str) -> None:
    """Migration 2: on PostgreSQL the payload columns are stored as they are (pglz cost CPU and saved
    nothing), including in a database written at version 1; SQLite records the version all the same."""
    from mlwatch.collector.sql_store import SqlStore

    store = open_store(db_url)
    assert isinstance(store, SqlStore)
    try:
        if store.dialect.name != "postgresql":
            assert store.schema_version() == latest_version()
            return
        storage = "SELECT attrelid::regclass::text, attstorage FROM pg_attribute WHERE attname = 'payload' AND attrelid::regclass::text IN ('profiles', 'rollups', 'model_references')"
        assert sorted(store._rows(storage)) == [("model_references", "e"), ("profiles", "e"), ("rollups", "e")]
        with store._tx():  # back to a version-1 database: the default storage, version 2 not applied
            for table in ("profiles", "rollups", "model_references"):
                store._execute(f"ALTER TABLE {table} ALTER COLUMN payload SET STORAGE EXTENDED")
            store._execute("DELETE FROM schema_version WHERE version >= 2")
    finally:
        store.close()
    upgraded = open_store(db_url)
    assert isinstance(upgraded, SqlStore)
    try:
        assert upgraded.schema_version() == latest_version()
        assert {s for _, s in upgraded._rows(storage)} == {"e"}
    finally:
        upgraded.close()


def test_rollups_of_older_versions_are_dropped(db_url: str) -> None:
    """Migration 3: rollups written before it may not record exactly the rows they merged, so they
    are dropped (a cache: rebuilt on the next read) rather than extended."""
    from mlwatch.collector.sql_store import SqlStore

    store = open_store(db_url)
    assert isinstance(store, SqlStore)
    try:
        store.put_rollup(Rollup(KEY, 3600.0, 0.0, 3600.0, 3, 7, b"written by version 2"))
        with store._tx():
            store._execute("DELETE FROM schema_version WHERE version >= 3")
    finally:
        store.close()
    upgraded = open_store(db_url)
    try:
        assert upgraded.schema_version() == latest_version() and upgraded.rollup(KEY, 3600.0, 0.0) is None
        upgraded.put_rollup(Rollup(KEY, 3600.0, 0.0, 3600.0, 3, 7, b"written by version 3"))
    finally:
        upgraded.close()
    reopened = open_store(db_url)  # applied once: later rollups stay
    try:
        assert reopened.rollup(KEY, 3600.0, 0.0) is not None
    finally:
        reopened.close()


def test_newer_schema_is_refused(store: Store, db_url: str) -> None:
    """A database written by a newer mlwatch is not misread."""
    from mlwatch.collector.sql_store import SqlStore

    assert isinstance(store, SqlStore)
    with store._tx():
        store._execute("INSERT INTO schema_version (version, applied_at, description) VALUES (?, ?, ?)", (999, 0.0, "future"))
    with pytest.raises(ConfigError, match="newer"):
        open_store(db_url)


def test_ingest_is_idempotent_per_payload(store: Store) -> None:
    """The same payload from one instance is stored once; a different payload for the window is kept too."""
    assert store.add_profiles([_row(0, b"a")]) == [True]
    assert store.add_profiles([_row(0, b"a")]) == [False]
    assert store.known_payloads("svc", "i-1", [b"a".hex()]) == {b"a".hex()}
    assert store.known_payloads("svc", "i-2", [b"a".hex()]) == set()
    assert store.add_profiles([_row(0, b"b"), _row(0, b"a", instance="i-2"), _row(60, b"c")]) == [True, True, True]
    stats = store.window_stats("fraud", 0, 120)
    assert [(w.window_start, w.count, w.instances, w.n_rows) for w in stats] == [(0.0, 3, 2, 30), (60.0, 1, 1, 10)]
    assert sorted(p for _, _, p in store.raw_payloads(KEY, [0.0])) == [b"a", b"a", b"b"]
    assert store.counts()["profiles"] == 4
    # Several rows per statement: a payload twice in one call is stored once (its first row is the new one).
    rows = [_row(120 + 60 * i, i.to_bytes(2, "big")) for i in range(450)] + [_row(120, (0).to_bytes(2, "big"))]
    added = store.add_profiles(rows)
    assert added == [True] * 450 + [False] and store.counts()["profiles"] == 454
    assert store.known_payloads("svc", "i-1", [i.to_bytes(2, "big").hex() for i in (0, 7, 449)] + [b"zz".hex()]) == {
        i.to_bytes(2, "big").hex() for i in (0, 7, 449)
    }


def test_ingest_without_insert_returning(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite before 3.35 has no ``INSERT ... RETURNING``: the per-row path gives the same answers."""
    monkeypatch.setattr(store, "supports_returning", False)
    assert store.add_profiles([_row(0, b"a"), _row(60, b"b"), _row(0, b"a")]) == [True, True, False]
    assert store.add_profiles([_row(0, b"a"), _row(120, b"c")]) == [False, True]
    assert store.counts()["profiles"] == 3


def test_filters_listing_and_features(store: Store) -> None:
    """Listing endpoints' queries and per-series filters."""
    other = SeriesKey("svc2", "fraud", "v2", "country=DE")
    store.add_profiles([_row(0, b"a"), _row(60, b"b", key=other)])
    assert [w.key for w in store.window_stats("fraud", 0, 200, Filters(version="v2"))] == [other]
    assert [w.key for w in store.window_stats("fraud", 0, 200, Filters(segment="country=DE", service="svc2"))] == [other]
    assert store.window_stats("fraud", 0, 200, Filters(service="nope")) == []
    assert [s["service"] for s in store.services()] == ["svc", "svc2"]
    assert store.models()[0]["versions"] == 2
    assert [v["version"] for v in store.versions("fraud")] == ["v1", "v2"]
    assert {(f["role"], f["name"]) for f in store.features("fraud", "v1")} == {("input", "amount"), ("output", "score")}
    assert store.latest_window_end("fraud") == 120.0
    assert store.window_starts_before("fraud", 1e9, 1) == [60.0]


def test_rows_after_an_id(store: Store) -> None:
    """What extending a rollup reads: the count up to an id, and the later rows in id order, limited."""
    store.add_profiles([_row(60 * i, bytes([i])) for i in range(5)] + [_row(3600, b"next hour")])
    ids = sorted(i for _, i, _ in store.raw_payloads(KEY, [60.0 * i for i in range(5)]))
    assert store.rows_after(KEY, 0.0, 3600.0, ids[1], 10) == (2, [(ids[2], b"\x02"), (ids[3], b"\x03"), (ids[4], b"\x04")])
    assert store.rows_after(KEY, 0.0, 3600.0, ids[1], 2) == (2, [(ids[2], b"\x02"), (ids[3], b"\x03")])
    assert store.rows_after(KEY, 60.0, 120.0, 0, 10) == (0, [(ids[1], b"\x01")])
    assert store.rows_after(KEY, 0.0, 3600.0, ids[4], 10) == (5, [])


def test_rollups_and_references(store: Store) -> None:
    """Rollups upsert with their freshness numbers; references replace and delete."""
    store.put_rollup(Rollup(KEY, 3600.0, 0.0, 3600.0, 3, 7, b"merged"))
    store.put_rollup(Rollup(KEY, 3600.0, 0.0, 3600.0, 4, 9, b"merged2"))
    meta = store.rollup_meta(KEY, 0, 3600)
    assert [(m.tier, m.bucket_start, m.n_parts, m.max_id) for m in meta] == [(3600.0, 0.0, 4, 9)]
    assert store.rollup(KEY, 3600.0, 0.0) == Rollup(KEY, 3600.0, 0.0, 3600.0, 4, 9, b"merged2")
    assert store.rollup(KEY, 0.0, 0.0) is None
    assert store.get_reference("fraud") is None
    store.set_reference(ReferenceRow("fraud", b"ref", 1.0, "test", {"rows": 3}))
    store.set_reference(ReferenceRow("fraud", b"ref2", 2.0, "test", {"rows": 4}))
    ref = store.get_reference("fraud")
    assert ref is not None and ref.payload == b"ref2" and ref.summary == {"rows": 4}
    assert store.delete_reference("fraud") and not store.delete_reference("fraud")
