"""PostgreSQL storage (psycopg 3): the production store, shared by several collectors if needed.

Needs ``pip install "mlwatch[postgres]"``. Migrations take a transaction-scoped advisory lock so
collectors starting together apply them once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from mlwatch._errors import ConfigError
from mlwatch.collector.migrations import Dialect
from mlwatch.collector.sql_store import SqlStore

__all__ = ["PostgresStore"]

POSTGRES = Dialect(name="postgresql", blob="BYTEA", double="DOUBLE PRECISION", serial_pk="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
#: pg_advisory_xact_lock key for migrations ("mlwatch" in ASCII, truncated to fit a bigint).
_MIGRATION_LOCK = 0x6D6C7761746368


class PostgresStore(SqlStore):
    """`Store` in a PostgreSQL database given by a ``postgresql://`` URL."""

    dialect = POSTGRES

    def __init__(self, url: str) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError:
            raise ConfigError('PostgreSQL storage needs psycopg: pip install "mlwatch[postgres]"') from None
        self.url = _redact(url)
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise ConfigError(f"cannot connect to PostgreSQL at {self.url}: {exc}") from None
        self.migrate()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql.replace("?", "%s"), tuple(params))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._conn.transaction():
            yield

    def _lock_migrations(self) -> None:
        self._execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
