"""Prebuilt statements run as driver statements (daemon/store/driver.py), compiled once per database connection.

For code that runs the same statements for every report (linking, the sidecar's labels) through functions that
take a `Connection`: `rows(connection, STATEMENT, values)` runs the statement's driver form on the DBAPI cursor
of the connection's transaction, compiled on first use and kept in the connection's `info` (which lives as long
as the pooled DBAPI connection, so a statement is compiled once per pooled connection, not per call). Rows come
back as named tuples with the selected columns' keys, each value converted by its column type's result
processor, as `connection.execute(STATEMENT, values).all()` reads them; writes go through the columns' bind
processors. Only for statements built once (module constants): the cache is keyed by the statement object.

On a connection outside a transaction they begin one first, as SQLAlchemy's own execution does (autobegin:
the caller commits it, or closing the connection rolls it back): the DBAPI cursor would not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from daemon.store.driver import DriverStatement, cursor_of, row_type

_INFO_KEY = "neurolabel.driver_statements"


@dataclass(frozen=True)
class _Compiled:
    statement: DriverStatement
    row: Any  # named tuple type of a SELECT's rows; None for other statements
    # The values the statement itself holds (literals compared with, e.g. `state == "active"`), by bind name.
    literals: Mapping[str, Any]

    def values(self, given: Mapping[str, Any]) -> Mapping[str, Any]:
        return {**self.literals, **given} if self.literals else given


def rows(connection: Connection, statement: sa.Executable, values: Mapping[str, Any]) -> list[Any]:
    """Every row of the SELECT (or UPDATE … RETURNING) `statement` for `values`."""
    compiled = _compiled(connection, statement)
    found = compiled.statement.fetchall(_cursor(connection), compiled.values(values))
    return [compiled.row(*row) for row in found]


def first(connection: Connection, statement: sa.Select[Any], values: Mapping[str, Any]) -> Any | None:
    """The first row of the SELECT `statement` for `values`, or None."""
    found = rows(connection, statement, values)
    return found[0] if found else None


def scalar(connection: Connection, statement: sa.Select[Any], values: Mapping[str, Any]) -> Any | None:
    """The first column of the first row, or None (as `Result.scalar`)."""
    row = first(connection, statement, values)
    return None if row is None else row[0]


def execute(connection: Connection, statement: sa.Executable, values: Mapping[str, Any]) -> int:
    """Run an UPDATE or DELETE (or an INSERT whose rows give `values`' keys); the rows it matched."""
    compiled = _compiled(connection, statement, tuple(values) if isinstance(statement, sa.Insert) else None)
    return int(compiled.statement.execute(_cursor(connection), compiled.values(values)).rowcount)


def insert(connection: Connection, table: sa.Table, values: Mapping[str, Any]) -> int:
    """INSERT one row of `values` into `table`; its new primary key."""
    keys = tuple(values)
    cache = _cache(connection)
    found = cache.get((table, keys))
    if found is None:
        found = cache[(table, keys)] = DriverStatement.insert_returning_id(table, connection.dialect, keys)
    return found.insert(_cursor(connection), values)


def _cursor(connection: Connection) -> Any:
    """A DBAPI cursor in the connection's transaction, begun here when there is none yet."""
    if not connection.in_transaction():
        connection.begin()
    return cursor_of(connection)


def _cache(connection: Connection) -> dict[Any, Any]:
    cache: dict[Any, Any] = connection.info.setdefault(_INFO_KEY, {})
    return cache


def _compiled(connection: Connection, statement: sa.Executable, keys: Sequence[str] | None = None) -> _Compiled:
    cache = _cache(connection)
    key = (statement, keys)
    found = cache.get(key)
    if found is None:
        driver = DriverStatement.compile(statement, connection.dialect, keys)
        row = row_type(statement)
        binds = statement.compile(dialect=connection.dialect, column_keys=list(keys) if keys else None).binds
        literals = {
            name: bind.effective_value for name, bind in binds.items() if name in driver.keys and not bind.required
        }
        found = cache[key] = _Compiled(driver, row, literals)
    return found
