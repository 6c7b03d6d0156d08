"""The SQL shared by the SQLite and PostgreSQL stores: one implementation of `Store`, two drivers.

Queries are written once with ``?`` placeholders; the PostgreSQL driver rewrites them to ``%s``.
Both drivers use one connection guarded by a lock (calls come from a thread pool), autocommit
outside explicit transactions, and ``INSERT ... ON CONFLICT`` for idempotent writes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from mlwatch._errors import ConfigError
from mlwatch.collector.migrations import MIGRATIONS, Dialect, latest_version
from mlwatch.collector.store import (
    Filters,
    ProfileRow,
    ReferenceRow,
    Rollup,
    RollupMeta,
    SeriesKey,
    WindowStat,
)

__all__ = ["SqlStore"]

_NO_FILTERS = Filters()
_IN_CHUNK = 500
#: Rows per multi-row INSERT (14 parameters each: far below SQLite's and PostgreSQL's limits).
_INSERT_CHUNK = 200


def _where(filters: Filters) -> tuple[str, list[Any]]:
    sql, params = "", []
    for column in ("service", "version", "segment"):
        value = getattr(filters, column)
        if value is not None:
            sql += f" AND {column} = ?"
            params.append(value)
    return sql, params


class SqlStore:
    """`Store` over a DB-API connection; subclasses provide the driver specifics."""

    dialect: Dialect
    url: str
    #: ``INSERT ... RETURNING`` (PostgreSQL; SQLite from 3.35): one statement per request.
    supports_returning = True

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._known_features: set[tuple[str, str, str, str]] = set()

    # ------------------------------------------------------------------ driver hooks
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def _transaction(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _lock_migrations(self) -> None:
        """Serialize migrations between processes (PostgreSQL: an advisory lock)."""

    def close(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._execute(sql, params).fetchall())

    @contextmanager
    def _tx(self) -> Iterator[None]:
        with self._lock, self._transaction():
            yield

    # ------------------------------------------------------------------ schema
    def migrate(self) -> None:
        """Apply every migration newer than the database's version (refuse a newer database)."""
        with self._tx():
            self._lock_migrations()
            self._execute(
                f"CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                f"applied_at {self.dialect.double} NOT NULL, description TEXT NOT NULL)"
            )
            current = self._execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0]
            if current > latest_version():
                raise ConfigError(
                    f"the database {self.url} has schema version {current}, newer than this mlwatch "
                    f"({latest_version()}): upgrade mlwatch"
                )
            for migration in MIGRATIONS:
                if migration.version > current:
                    for statement in migration.render(self.dialect):
                        self._execute(statement)
                    self._execute(
                        "INSERT INTO schema_version (version, applied_at, description) VALUES (?, ?, ?)",
                        (migration.version, time.time(), migration.description),
                    )

    def schema_version(self) -> int:
        return int(self._rows("SELECT COALESCE(MAX(version), 0) FROM schema_version")[0][0])

    # ------------------------------------------------------------------ ingest
    def known_payloads(self, service: str, instance: str, content_hashes: Sequence[str]) -> set[str]:
        """Which of these payload digests this instance already stored: one query per 500."""
        found: set[str] = set()
        hashes = list(dict.fromkeys(content_hashes))
        for i in range(0, len(hashes), _IN_CHUNK):
            chunk = hashes[i : i + _IN_CHUNK]
            marks = ", ".join("?" * len(chunk))
            found.update(
                h for (h,) in self._rows(
                    f"SELECT DISTINCT content_hash FROM profiles WHERE service = ? AND instance = ? AND content_hash IN ({marks})",
                    (service, instance, *chunk),
                )
            )
        return found

    def add_profiles(self, rows: Sequence[ProfileRow]) -> list[bool]:
        """Insert each row unless the same payload is already stored; True for the new ones.

        One multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` per chunk: a round trip per
        request instead of one per profile, which is what PostgreSQL ingest was waiting on.
        """
        now = time.time()
        inserted: set[tuple[str, str, str]] = set()
        columns = (
            "INSERT INTO profiles (service, instance, model, version, segment, window_start, window_end, "
            "content_hash, received_at, n_rows, calls, errors, size_bytes, payload) VALUES "
        )
        row_marks = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        with self._tx():
            for i in range(0, len(rows), _INSERT_CHUNK):
                chunk = rows[i : i + _INSERT_CHUNK]
                values = [
                    (r.service, r.instance, r.key.model, r.key.version, r.key.segment, r.window_start,
                     r.window_end, r.content_hash, now, r.n_rows, r.calls, r.errors, len(r.payload), r.payload)
                    for r in chunk
                ]
                if self.supports_returning:
                    sql = f"{columns}{', '.join([row_marks] * len(chunk))} ON CONFLICT DO NOTHING RETURNING service, instance, content_hash"
                    params = [v for row in values for v in row]
                    inserted.update((str(a), str(b), str(c)) for a, b, c in self._execute(sql, params).fetchall())
                    continue
                for r, row in zip(chunk, values, strict=True):  # SQLite before 3.35: a statement per row; rowcount says if it was new
                    if self._execute(f"{columns}{row_marks} ON CONFLICT DO NOTHING", row).rowcount == 1:
                        inserted.add((r.service, r.instance, r.content_hash))
            new = {(r.key.model, r.key.version, role, name): kind for r in rows for role, name, kind in r.features}
            for ident, kind in new.items():
                if ident not in self._known_features:
                    self._execute(
                        "INSERT INTO features (model, version, role, name, kind, first_seen) "
                        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (*ident, kind, now),
                    )
        self._known_features.update(new)  # remember only after the commit
        added: list[bool] = []
        for r in rows:  # a payload sent twice in one request is stored once: only its first row is new
            ident3 = (r.service, r.instance, r.content_hash)
            added.append(ident3 in inserted)
            inserted.discard(ident3)
        return added

    # ------------------------------------------------------------------ reading windows
    def window_stats(self, model: str, start: float, end: float, filters: Filters = _NO_FILTERS) -> list[WindowStat]:
        extra, params = _where(filters)
        rows = self._rows(
            "SELECT service, version, segment, window_start, MAX(window_end), COUNT(*), MAX(id), SUM(n_rows), "
            "SUM(calls), SUM(errors), COUNT(DISTINCT instance) FROM profiles "
            f"WHERE model = ? AND window_start >= ? AND window_start < ?{extra} "
            "GROUP BY service, version, segment, window_start ORDER BY window_start, service, version, segment",
            (model, start, end, *params),
        )
        return [
            WindowStat(SeriesKey(r[0], model, r[1], r[2]), float(r[3]), float(r[4]), int(r[5]), int(r[6]),
                       int(r[7]), int(r[8]), int(r[9]), int(r[10]))
            for r in rows
        ]

    def raw_payloads(self, key: SeriesKey, window_starts: Sequence[float]) -> list[tuple[float, int, bytes]]:
        out: list[tuple[float, int, bytes]] = []
        starts = sorted(set(window_starts))
        for i in range(0, len(starts), _IN_CHUNK):
            chunk = starts[i : i + _IN_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            out.extend(
                (float(ws), int(row_id), bytes(payload))
                for ws, row_id, payload in self._rows(
                    "SELECT window_start, id, payload FROM profiles WHERE service = ? AND model = ? AND version = ? "
                    f"AND segment = ? AND window_start IN ({marks}) ORDER BY window_start, id",
                    (key.service, key.model, key.version, key.segment, *chunk),
                )
            )
        return out

    def rows_after(
        self, key: SeriesKey, start: float, end: float, after_id: int, limit: int
    ) -> tuple[int, list[tuple[int, bytes]]]:
        where = (
            "FROM profiles WHERE service = ? AND model = ? AND version = ? AND segment = ? "
            "AND window_start >= ? AND window_start < ?"
        )
        params = (key.service, key.model, key.version, key.segment, start, end)
        below = int(self._rows(f"SELECT COUNT(*) {where} AND id <= ?", (*params, after_id))[0][0])
        rows = self._rows(f"SELECT id, payload {where} AND id > ? ORDER BY id LIMIT ?", (*params, after_id, limit))
        return below, [(int(i), bytes(p)) for i, p in rows]

    def rollup_meta(self, key: SeriesKey, start: float, end: float) -> list[RollupMeta]:
        rows = self._rows(
            "SELECT tier, bucket_start, n_parts, max_id FROM rollups WHERE service = ? AND model = ? "
            "AND version = ? AND segment = ? AND bucket_start >= ? AND bucket_start < ?",
            (key.service, key.model, key.version, key.segment, start, end),
        )
        return [RollupMeta(float(r[0]), float(r[1]), int(r[2]), int(r[3])) for r in rows]

    def rollup(self, key: SeriesKey, tier: float, bucket_start: float) -> Rollup | None:
        rows = self._rows(
            "SELECT bucket_end, n_parts, max_id, payload FROM rollups WHERE service = ? AND model = ? AND version = ? "
            "AND segment = ? AND tier = ? AND bucket_start = ?",
            (key.service, key.model, key.version, key.segment, tier, bucket_start),
        )
        if not rows:
            return None
        bucket_end, n_parts, max_id, payload = rows[0]
        return Rollup(key, tier, bucket_start, float(bucket_end), int(n_parts), int(max_id), bytes(payload))

    def put_rollup(self, rollup: Rollup) -> None:
        k = rollup.key
        with self._tx():
            self._execute(
                "INSERT INTO rollups (service, model, version, segment, tier, bucket_start, bucket_end, n_parts, "
                "max_id, built_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (service, model, version, segment, tier, bucket_start) DO UPDATE SET "
                "bucket_end = excluded.bucket_end, n_parts = excluded.n_parts, max_id = excluded.max_id, "
                "built_at = excluded.built_at, payload = excluded.payload",
                (k.service, k.model, k.version, k.segment, rollup.tier, rollup.bucket_start, rollup.bucket_end,
                 rollup.n_parts, rollup.max_id, time.time(), rollup.payload),
            )

    def window_starts_before(self, model: str, before: float, limit: int, filters: Filters = _NO_FILTERS) -> list[float]:
        extra, params = _where(filters)
        rows = self._rows(
            f"SELECT DISTINCT window_start FROM profiles WHERE model = ? AND window_start < ?{extra} "
            "ORDER BY window_start DESC LIMIT ?",
            (model, before, *params, limit),
        )
        return [float(r[0]) for r in rows]

    def latest_window_end(self, model: str, filters: Filters = _NO_FILTERS) -> float | None:
        extra, params = _where(filters)
        rows = self._rows(f"SELECT MAX(window_end) FROM profiles WHERE model = ?{extra}", (model, *params))
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    # ------------------------------------------------------------------ listing
    def services(self) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT service, COUNT(DISTINCT instance), COUNT(DISTINCT model), COUNT(*), MIN(window_start), "
            "MAX(window_end), MAX(received_at) FROM profiles GROUP BY service ORDER BY service"
        )
        return [
            {"service": r[0], "instances": int(r[1]), "models": int(r[2]), "profiles": int(r[3]),
             "first_window_start": float(r[4]), "last_window_end": float(r[5]), "last_received_at": float(r[6])}
            for r in rows
        ]

    def models(self) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT model, COUNT(DISTINCT version), COUNT(DISTINCT segment), COUNT(DISTINCT service), COUNT(*), "
            "MIN(window_start), MAX(window_end) FROM profiles GROUP BY model ORDER BY model"
        )
        refs = {r[0] for r in self._rows("SELECT model FROM model_references")}
        return [
            {"model": r[0], "versions": int(r[1]), "segments": int(r[2]), "services": int(r[3]), "profiles": int(r[4]),
             "first_window_start": float(r[5]), "last_window_end": float(r[6]), "has_reference": r[0] in refs}
            for r in rows
        ]

    def versions(self, model: str) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT version, COUNT(*), MIN(window_start), MAX(window_end), SUM(n_rows), SUM(calls) FROM profiles "
            "WHERE model = ? GROUP BY version ORDER BY MIN(window_start)",
            (model,),
        )
        return [
            {"version": r[0] or None, "profiles": int(r[1]), "first_window_start": float(r[2]),
             "last_window_end": float(r[3]), "rows": int(r[4]), "calls": int(r[5])}
            for r in rows
        ]

    def features(self, model: str, version: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT version, role, name, kind, first_seen FROM features WHERE model = ?"
        params: list[Any] = [model]
        if version is not None:
            sql += " AND version = ?"
            params.append(version)
        rows = self._rows(sql + " ORDER BY role, name, version", params)
        return [{"version": r[0] or None, "role": r[1], "name": r[2], "kind": r[3], "first_seen": float(r[4])} for r in rows]

    # ------------------------------------------------------------------ references
    def set_reference(self, ref: ReferenceRow) -> None:
        with self._tx():
            self._execute(
                "INSERT INTO model_references (model, payload, uploaded_at, source, summary) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (model) DO UPDATE SET payload = excluded.payload, uploaded_at = excluded.uploaded_at, "
                "source = excluded.source, summary = excluded.summary",
                (ref.model, ref.payload, ref.uploaded_at, ref.source, json.dumps(ref.summary)),
            )

    def get_reference(self, model: str) -> ReferenceRow | None:
        rows = self._rows(
            "SELECT payload, uploaded_at, source, summary FROM model_references WHERE model = ?", (model,)
        )
        if not rows:
            return None
        payload, uploaded_at, source, summary = rows[0]
        return ReferenceRow(model, bytes(payload), float(uploaded_at), source, json.loads(summary))

    def delete_reference(self, model: str) -> bool:
        with self._tx():
            cur = self._execute("DELETE FROM model_references WHERE model = ?", (model,))
            return bool(cur.rowcount)

    def counts(self) -> dict[str, int]:
        out = {}
        for table in ("profiles", "rollups", "features", "model_references"):
            out[table] = int(self._rows(f"SELECT COUNT(*) FROM {table}")[0][0])
        return out
