"""Engine creation and transactions; the only place that knows SQLite from PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url


@dataclass(frozen=True)
class Database:
    """A connected database. `begin()` is the one way to write."""

    engine: Engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def supports_skip_locked(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction, committed on normal exit and rolled back on error."""
        with self.engine.begin() as connection:
            yield connection

    def dedicated_writer(self, idle_seconds: float = 30.0) -> DedicatedWriter:
        """A connection of its own for one thread's many short write transactions (see DedicatedWriter)."""
        return DedicatedWriter(self.engine, idle_seconds)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for reads (a deferred transaction, which blocks no writer)."""
        with self.engine.connect() as connection:
            connection.execution_options(neurolabel_read_only=True)
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()


class DedicatedWriter:
    """One thread's write transactions on a connection it keeps between them.

    `Database.begin()` checks a connection out of the pool and back in (with the pool's reset) for every
    transaction: ~0.13 ms of CPU, as much as a small transaction's statements. The DICOM index committer
    commits a few instances at a time, hundreds of times a second, so it keeps its connection. A transaction
    that fails drops the connection: a broken one is never used again. One idle for longer than
    `idle_seconds` goes back to the pool first, whose checkout tests it (`pool_pre_ping` on PostgreSQL: a
    server restarted meanwhile costs no failed transaction). One thread uses it.
    """

    def __init__(self, engine: Engine, idle_seconds: float = 30.0) -> None:
        self._engine = engine
        self._idle_seconds = idle_seconds
        self._connection: Connection | None = None
        self._last_used = 0.0

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        """A transaction, committed on normal exit and rolled back on error, as `Database.begin()`'s."""
        if self._connection is not None and time.monotonic() - self._last_used > self._idle_seconds:
            self.close()
        if self._connection is None:
            self._connection = self._engine.connect()
        try:
            with self._connection.begin():
                yield self._connection
        except BaseException:
            self.close()
            raise
        finally:
            self._last_used = time.monotonic()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - a broken connection: the pool discards it
                pass


def open_database(url: str, *, echo: bool = False) -> Database:
    """Create the engine; for SQLite create the folder and make commits durable (WAL, synchronous=FULL)."""
    parsed = make_url(url)
    # hide_parameters: a database error's text (logged with its traceback by several components) would
    # otherwise carry the statement's values - report text, patient names and ids.
    options: dict[str, Any] = {"echo": echo, "future": True, "hide_parameters": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        options["connect_args"] = {"timeout": 30, "check_same_thread": False}
        engine = create_engine(url, **options)
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take control so
        # that BEGIN IMMEDIATE serialises writers instead of failing late.
        event.listen(engine, "begin", _sqlite_begin_immediate)
    else:
        options.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
        if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg":
            # Server-side timestamps and casts in UTC, whatever the server's own zone.
            options["connect_args"] = {"options": "-c timezone=UTC"}
        engine = create_engine(url, **options)
    return Database(engine=engine)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin_immediate(connection: Connection) -> None:
    read_only = connection.get_execution_options().get("neurolabel_read_only", False)
    # On the DBAPI connection: SQLAlchemy's statement execution costs more CPU than BEGIN itself, once for
    # every transaction of the daemon.
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")
    finally:
        cursor.close()
