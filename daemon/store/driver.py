"""Statements compiled once for a dialect and run on the DBAPI cursor of the caller's transaction.

For the hot path of HL7 intake, which runs the same few INSERTs for every message: there SQLAlchemy's
per-execution work (cache key, execution context, parameter processing, result object; ~0.1 ms a
statement) cost more than SQLite itself. SQLAlchemy still writes the SQL (compiled once per dialect, in
the dialect's own paramstyle: `?` for sqlite3, `%(name)s` for psycopg) and still converts the values
(each parameter goes through its column type's bind processor for that dialect: UTC timestamps, JSON),
so a row written here is the row `connection.execute(statement, values)` writes. The statements run in
the caller's transaction (same DBAPI connection); errors are the driver's own exceptions.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
import dataclasses
import operator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import Dialect

Processor = Callable[[Any], Any]
_UNSET = object()


@dataclass(frozen=True)
class DriverStatement:
    """One statement compiled for one dialect. Build it once (`compile`), then run it for every row."""

    sql: str
    # Parameter names in the order the driver wants them (positional paramstyles), or the dict's keys.
    keys: tuple[str, ...]
    processors: tuple[Processor | None, ...]
    positional: bool
    # How `insert` learns the new primary key: "lastrowid" (SQLite), "returning" (others), "" (not an insert).
    new_id_from: str = ""
    # A SELECT's result columns' converters, by position (None: keep the driver's value), for `fetchone`/`fetchall`.
    result_processors: tuple[Processor | None, ...] = ()
    # Derived: the row's values in `keys` order, and the (index, processor) of the values to convert.
    _values_of: Callable[[Mapping[str, Any]], Any] = dataclasses.field(init=False, repr=False, compare=False)
    _converting: tuple[tuple[int, Processor], ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.keys:
            values_of: Callable[[Mapping[str, Any]], Any] = lambda values: ()  # noqa: E731
        elif len(self.keys) == 1:
            key = self.keys[0]
            values_of = lambda values: (values[key],)  # noqa: E731
        else:
            values_of = operator.itemgetter(*self.keys)
        object.__setattr__(self, "_values_of", values_of)
        converting = tuple((index, processor) for index, processor in enumerate(self.processors) if processor)
        object.__setattr__(self, "_converting", converting)

    @classmethod
    def compile(cls, statement: sa.Executable, dialect: Dialect, keys: Sequence[str] | None = None) -> DriverStatement:
        """Compile `statement` for `dialect`. For an INSERT, `keys` are the columns every row gives; a column
        left out must have no Python-side default (which only SQLAlchemy's own execution would fill in)."""
        if isinstance(statement, sa.Insert):
            if keys is None:
                raise ValueError("an INSERT needs the keys its rows give")
            missing = [
                column.key
                for column in statement.table.columns  # type: ignore[attr-defined]
                if column.key not in keys and column.default is not None and not column.primary_key
            ]
            if missing:
                raise ValueError(f"insert into {statement.table} leaves out {missing}, which have Python-side defaults")
            if not statement.returning_column_descriptions:
                # No RETURNING asked for: none implied either (PostgreSQL's implicit RETURNING of the key).
                statement = statement.inline()
        compiled = statement.compile(dialect=dialect, column_keys=list(keys) if keys is not None else None)
        positional = bool(compiled.positional)
        names = tuple(compiled.positiontup or ()) if positional else tuple(compiled.binds)
        processors = tuple(compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names)
        results: tuple[Processor | None, ...] = ()
        columns = result_columns(statement)
        if columns is not None:
            results = tuple(column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns)
        return cls(str(compiled), names, processors, positional, result_processors=results)

    @classmethod
    def insert_returning_id(cls, table: sa.Table, dialect: Dialect, keys: Sequence[str]) -> DriverStatement:
        """`INSERT INTO table (keys) VALUES (...)`, whose `insert` returns the new row's primary key."""
        statement = table.insert()
        if dialect.name != "sqlite":
            statement = statement.returning(*table.primary_key.columns)
        new_id_from = "lastrowid" if dialect.name == "sqlite" else "returning"
        return dataclasses.replace(cls.compile(statement, dialect, keys), new_id_from=new_id_from)

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The driver's parameters for one row."""
        row = list(self._values_of(values)) if self.keys else []
        # Every value goes through its processor, None included: JSON writes None as JSON null, as SQLAlchemy does.
        for index, processor in self._converting:
            row[index] = processor(row[index])
        return tuple(row) if self.positional else dict(zip(self.keys, row))

    def execute(self, cursor: Any, values: Mapping[str, Any]) -> Any:
        """Run for one row; return the cursor (for `fetchone`/`fetchall`)."""
        cursor.execute(self.sql, self.parameters(values))
        return cursor

    def fetchone(self, cursor: Any, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Run a SELECT for one row of parameters; its first row, each value converted as SQLAlchemy would."""
        row = self.execute(cursor, values).fetchone()
        return None if row is None else self._converted(row)

    def fetchall(self, cursor: Any, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run a SELECT for one row of parameters; all its rows, each value converted as SQLAlchemy would."""
        return [self._converted(row) for row in self.execute(cursor, values).fetchall()]

    def _converted(self, row: Sequence[Any]) -> tuple[Any, ...]:
        if not any(self.result_processors):
            return tuple(row)
        return tuple(value if processor is None else processor(value)
                     for value, processor in zip(row, self.result_processors))

    def executemany(self, cursor: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        """Run for every row. A value that is the very object of the row before (a batch's one timestamp) is
        converted once."""
        if not rows:
            return
        previous: list[Any] = [_UNSET] * len(self.keys)
        converted: list[Any] = [None] * len(self.keys)
        parameters = []
        for values in rows:
            row = list(self._values_of(values)) if self.keys else []
            for index, processor in self._converting:
                value = row[index]
                if value is not previous[index]:
                    previous[index] = value
                    converted[index] = processor(value)
                row[index] = converted[index]
            parameters.append(tuple(row) if self.positional else dict(zip(self.keys, row)))
        cursor.executemany(self.sql, parameters)

    def insert(self, cursor: Any, values: Mapping[str, Any]) -> int:
        """Run an INSERT built by `insert_returning_id`; return the new primary key."""
        if not self.new_id_from:
            raise TypeError("not built by insert_returning_id")
        cursor.execute(self.sql, self.parameters(values))
        if self.new_id_from == "lastrowid":
            return int(cursor.lastrowid)
        return int(cursor.fetchone()[0])


def result_columns(statement: sa.Executable) -> Any | None:
    """The columns of the rows `statement` returns (a SELECT's, or an UPDATE's or DELETE's RETURNING); None if none."""
    if isinstance(statement, sa.Select):
        return statement.selected_columns
    if isinstance(statement, (sa.Update, sa.Delete)) and statement.returning_column_descriptions:
        return statement.exported_columns
    return None


def row_type(statement: sa.Executable, name: str = "Row") -> Any | None:
    """A named tuple type for the rows of `statement`, with its result columns' keys; None if it returns none."""
    columns = result_columns(statement)
    if columns is None:
        return None
    return collections.namedtuple(name, [column.key for column in columns], rename=True)  # type: ignore[misc]


def cursor_of(connection: Connection) -> Any:
    """A DBAPI cursor on the connection of `connection`'s transaction (close it, or let it go with the transaction)."""
    return connection.connection.cursor()
