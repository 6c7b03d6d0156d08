"""SQLite storage: the zero-set-up default (one file, WAL journal, one connection behind a lock)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from mlwatch._errors import ConfigError
from mlwatch.collector.migrations import Dialect
from mlwatch.collector.sql_store import SqlStore

__all__ = ["SqliteStore"]

SQLITE = Dialect(name="sqlite", blob="BLOB", double="REAL", serial_pk="INTEGER PRIMARY KEY AUTOINCREMENT")


class SqliteStore(SqlStore):
    """`Store` in a SQLite file (``:memory:`` works for tests)."""

    dialect = SQLITE
    supports_returning = sqlite3.sqlite_version_info >= (3, 35, 0)

    def __init__(self, path: str) -> None:
        super().__init__()
        self.url = path
        if path != ":memory:":
            parent = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(parent):
                raise ConfigError(f"cannot create the database {path}: directory {parent} does not exist")
        try:
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the SQLite database {path}: {exc}") from None
        self.migrate()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql, tuple(params))

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
