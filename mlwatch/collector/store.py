"""The storage interface: what the collector keeps and how it asks for it, whatever the database.

Rows and policy (documented in ``docs/collector.md``):

- ``profiles``: one row per distinct payload received from one instance for one window, keyed
  (service, instance, model, version, segment, window_start, content_hash). A retried export
  carries the same bytes, so it hits the key and is ignored: ingest is idempotent. A different
  payload for the same instance and window (a partial window flushed early, then the rest) is a
  new row, and both count: merge on read folds them together.
- ``rollups``: cached merges of one series (service, model, version, segment) over a window (tier
  0), an hour or a day. Each remembers how many raw rows it merged and the highest row id; a
  rollup whose numbers no longer match the raw rows is stale and extended or rebuilt on the next
  read, so late data can never be served from an old cache and no invalidation races exist.
  Raw rows are never updated or deleted: extending a rollup with the rows after its highest id
  is exact only because of that.
- ``features``: every (model, version, role, column) seen, for listing.
- ``model_references``: one uploaded reference profile per model.

Implementations: `mlwatch.collector.sqlite_store` and `mlwatch.collector.postgres_store`, sharing
`mlwatch.collector.sql_store`. `open_store` picks one from a path or a ``postgresql://`` URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "Filters",
    "ProfileRow",
    "ReferenceRow",
    "Rollup",
    "RollupMeta",
    "SeriesKey",
    "Store",
    "WindowStat",
    "open_store",
]


@dataclass(frozen=True, order=True)
class SeriesKey:
    """One merged series: profiles of these share a merge key apart from the window."""

    service: str
    model: str
    version: str  # "" when the profile has no version
    segment: str  # the profile's segment_key, "" for none


@dataclass(frozen=True)
class Filters:
    """Optional restrictions of a query to one service, version or segment key."""

    service: str | None = None
    version: str | None = None
    segment: str | None = None


@dataclass(frozen=True)
class ProfileRow:
    """A validated profile as received from one instance, ready to store."""

    service: str
    instance: str
    key: SeriesKey
    window_start: float
    window_end: float
    content_hash: str
    n_rows: int
    calls: int
    errors: int
    payload: bytes
    features: tuple[tuple[str, str, str], ...] = ()  # (role, name, kind)


@dataclass(frozen=True)
class WindowStat:
    """Raw rows of one series and window: their count and highest id identify the set exactly."""

    key: SeriesKey
    window_start: float
    window_end: float
    count: int
    max_id: int
    n_rows: int
    calls: int
    errors: int
    instances: int


@dataclass(frozen=True)
class RollupMeta:
    """Which raw rows a stored rollup merged (its freshness check)."""

    tier: float
    bucket_start: float
    n_parts: int
    max_id: int


@dataclass(frozen=True)
class Rollup:
    """A merged profile of one series over [bucket_start, bucket_start + tier) (tier 0: one window)."""

    key: SeriesKey
    tier: float
    bucket_start: float
    bucket_end: float
    n_parts: int
    max_id: int
    payload: bytes


@dataclass(frozen=True)
class ReferenceRow:
    """An uploaded reference profile and what it is."""

    model: str
    payload: bytes
    uploaded_at: float
    source: str
    summary: dict[str, Any]


class Store(Protocol):
    """What the collector needs from a database. Methods are blocking; call them from a thread."""

    url: str

    def schema_version(self) -> int: ...
    def known_payloads(self, service: str, instance: str, content_hashes: Sequence[str]) -> set[str]: ...
    def add_profiles(self, rows: Sequence[ProfileRow]) -> list[bool]: ...
    def window_stats(self, model: str, start: float, end: float, filters: Filters = ...) -> list[WindowStat]: ...
    def raw_payloads(self, key: SeriesKey, window_starts: Sequence[float]) -> list[tuple[float, int, bytes]]:
        """(window_start, id, payload) of the series' raw rows in those windows."""
        ...

    def rows_after(
        self, key: SeriesKey, start: float, end: float, after_id: int, limit: int
    ) -> tuple[int, list[tuple[int, bytes]]]:
        """For the series' raw rows with window_start in [start, end): how many have id <= `after_id`,
        and (id, payload) of at most `limit` of those with a higher id, in id order."""
        ...

    def rollup_meta(self, key: SeriesKey, start: float, end: float) -> list[RollupMeta]: ...
    def rollup(self, key: SeriesKey, tier: float, bucket_start: float) -> Rollup | None:
        """The stored rollup, its freshness numbers and payload read together (one row, one statement)."""
        ...

    def put_rollup(self, rollup: Rollup) -> None: ...
    def window_starts_before(self, model: str, before: float, limit: int, filters: Filters = ...) -> list[float]: ...
    def latest_window_end(self, model: str, filters: Filters = ...) -> float | None: ...
    def services(self) -> list[dict[str, Any]]: ...
    def models(self) -> list[dict[str, Any]]: ...
    def versions(self, model: str) -> list[dict[str, Any]]: ...
    def features(self, model: str, version: str | None = None) -> list[dict[str, Any]]: ...
    def set_reference(self, ref: ReferenceRow) -> None: ...
    def get_reference(self, model: str) -> ReferenceRow | None: ...
    def delete_reference(self, model: str) -> bool: ...
    def counts(self) -> dict[str, int]: ...
    def close(self) -> None: ...


def open_store(url: str) -> Store:
    """A `Store` for a ``postgresql://`` (or ``postgres://``) URL, else for a SQLite file path."""
    if url.startswith(("postgresql://", "postgres://")):
        from mlwatch.collector.postgres_store import PostgresStore

        return PostgresStore(url)
    from mlwatch.collector.sqlite_store import SqliteStore

    return SqliteStore(url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url)
