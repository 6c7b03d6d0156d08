"""Versioned schema migrations, one list for both databases (types differ by dialect only).

The ``schema_version`` table records each applied version; opening a store applies the missing
ones in order inside one transaction (under an advisory lock on PostgreSQL, so collectors starting
together do not race). A database newer than this code is refused rather than misread. To change
the schema, append a migration; never edit an applied one.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIGRATIONS", "Dialect", "Migration", "latest_version"]


@dataclass(frozen=True)
class Dialect:
    """The few type names that differ between SQLite and PostgreSQL."""

    name: str
    blob: str
    double: str
    serial_pk: str


@dataclass(frozen=True)
class Migration:
    """One schema version: statements with ``{blob}``, ``{double}``, ``{serial_pk}`` placeholders.

    `only` names the dialects whose databases run the statements (None: all); the version is
    recorded in every database all the same, so versions keep one meaning everywhere.
    """

    version: int
    description: str
    statements: tuple[str, ...]
    only: tuple[str, ...] | None = None

    def render(self, dialect: Dialect) -> list[str]:
        if self.only is not None and dialect.name not in self.only:
            return []
        return [s.format(blob=dialect.blob, double=dialect.double, serial_pk=dialect.serial_pk) for s in self.statements]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "profiles per instance and window, rollups, features, references",
        (
            """CREATE TABLE profiles (
                id {serial_pk},
                service TEXT NOT NULL,
                instance TEXT NOT NULL,
                model TEXT NOT NULL,
                version TEXT NOT NULL,
                segment TEXT NOT NULL,
                window_start {double} NOT NULL,
                window_end {double} NOT NULL,
                content_hash TEXT NOT NULL,
                received_at {double} NOT NULL,
                n_rows BIGINT NOT NULL,
                calls BIGINT NOT NULL,
                errors BIGINT NOT NULL,
                size_bytes BIGINT NOT NULL,
                payload {blob} NOT NULL,
                UNIQUE (service, instance, model, version, segment, window_start, content_hash)
            )""",
            "CREATE INDEX profiles_model_window ON profiles (model, window_start)",
            "CREATE INDEX profiles_hash ON profiles (content_hash)",
            """CREATE TABLE rollups (
                service TEXT NOT NULL,
                model TEXT NOT NULL,
                version TEXT NOT NULL,
                segment TEXT NOT NULL,
                tier {double} NOT NULL,
                bucket_start {double} NOT NULL,
                bucket_end {double} NOT NULL,
                n_parts BIGINT NOT NULL,
                max_id BIGINT NOT NULL,
                built_at {double} NOT NULL,
                payload {blob} NOT NULL,
                PRIMARY KEY (service, model, version, segment, tier, bucket_start)
            )""",
            """CREATE TABLE features (
                model TEXT NOT NULL,
                version TEXT NOT NULL,
                role TEXT NOT NULL,
                name TEXT NOT NULL,
                kind TEXT NOT NULL,
                first_seen {double} NOT NULL,
                PRIMARY KEY (model, version, role, name)
            )""",
            """CREATE TABLE model_references (
                model TEXT PRIMARY KEY,
                payload {blob} NOT NULL,
                uploaded_at {double} NOT NULL,
                source TEXT NOT NULL,
                summary TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        "PostgreSQL: profile payloads stored without TOAST compression",
        # Profile bytes hardly compress (pglz saved nothing on a 60 KB profile), yet trying cost
        # ~1.8 ms of the database's CPU per row against ~0.3 ms stored as they are.
        tuple(f"ALTER TABLE {table} ALTER COLUMN payload SET STORAGE EXTERNAL" for table in ("profiles", "rollups", "model_references")),
        only=("postgresql",),
    ),
    Migration(
        3,
        "rollups dropped once: those written before version 3 may not record exactly the rows they merged",
        # Rollups are a cache, rebuilt on the next read. Before version 3 a rollup recorded the
        # planning-time row count and highest id while merging the rows read a moment later, and a
        # stale rollup was extended with the rows above its highest id from version 3 on: a row
        # that arrived in between would be counted twice.
        ("DELETE FROM rollups",),
    ),
)


def latest_version() -> int:
    """The schema version this code writes and reads."""
    return MIGRATIONS[-1].version
