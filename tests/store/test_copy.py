"""`neurolabel db copy --to URL`: every row of every table, SQLite to PostgreSQL and back, ids continuing after."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from daemon.cli import main
from daemon.store import queue
from daemon.store.copy import CopyRefused, copy_database
from daemon.store.database import Database, open_database
from daemon.store.migrate import upgrade_to_head
from daemon.store.schema import metadata

ROWS_PER_TABLE = 5
PLUS_ONE = dt.timezone(dt.timedelta(hours=1))

pytestmark = pytest.mark.postgres


def _value(column: sa.Column, n: int, ids: dict[str, list[Any]]) -> Any:
    """A value of the column's type for row n (1-based), distinct per row; foreign keys point at copied rows."""
    for foreign_key in column.foreign_keys:
        target = foreign_key.column
        if target.table is column.table:  # the previous row (ids of a fresh table count from 1)
            return None if n == 1 else n - 1
        return ids[target.table.name][n - 1]
    python_type = _python_type(column)
    if python_type is bool:
        return n % 2 == 0
    if python_type is int:
        return n
    if python_type is float:
        return n / 3
    if python_type is dt.datetime:
        return dt.datetime(2026, 1, n, 9, 30, n, tzinfo=PLUS_ONE)
    if python_type is bytes:
        return bytes([n, 0, 255]) * 3
    if python_type in (dict, list):
        return {"n": n, "labels": {"mass": n % 2}, "text": "Ünïcode ✓"}
    length = getattr(column.type, "length", None) or 64
    return f"{column.name[:8]}-{n}-é"[:length]


def _python_type(column: sa.Column) -> type:
    try:
        return getattr(column.type, "impl", column.type).python_type
    except NotImplementedError:
        return str


def _populate(database: Database) -> None:
    ids: dict[str, list[Any]] = {}
    with database.begin() as connection:
        for table in metadata.sorted_tables:
            rows = []
            for n in range(1, ROWS_PER_TABLE + 1):
                row = {
                    column.name: _value(column, n, ids)
                    for column in table.columns
                    if not (column is table.autoincrement_column)
                }
                rows.append(row)
            inserted = []
            for row in rows:
                result = connection.execute(table.insert().values(**row))
                key = result.inserted_primary_key
                inserted.append(key[0] if key and key[0] is not None else row[next(iter(table.primary_key)).name])
            ids[table.name] = inserted


def _dump(database: Database) -> dict[str, list[dict[str, Any]]]:
    with database.connect() as connection:
        return {
            table.name: [
                dict(row)
                for row in connection.execute(sa.select(table).order_by(*table.primary_key.columns)).mappings()
            ]
            for table in metadata.sorted_tables
        }


def test_copy_sqlite_to_postgresql_and_back(tmp_path: Path, postgres_url: str) -> None:
    sqlite = open_database(f"sqlite:///{tmp_path / 'source.db'}")
    postgresql = open_database(postgres_url)
    back = open_database(f"sqlite:///{tmp_path / 'back.db'}")
    try:
        upgrade_to_head(sqlite)
        _populate(sqlite)
        original = _dump(sqlite)
        assert all(len(rows) == ROWS_PER_TABLE for rows in original.values())

        seen: list[str] = []
        summary = copy_database(sqlite, postgresql, batch_rows=2, progress=lambda table, rows: seen.append(table))
        assert summary.total == ROWS_PER_TABLE * len(metadata.tables)
        assert seen == [table.name for table in metadata.sorted_tables]
        assert _dump(postgresql) == original
        # New rows on PostgreSQL continue after the copied ids.
        with postgresql.begin() as connection:
            job_id = queue.enqueue(connection, "classify", "after-the-copy")
        assert job_id == max(row["id"] for row in original["jobs"]) + 1

        copy_database(postgresql, back)
        copied_back = _dump(back)
        assert {name: rows for name, rows in copied_back.items() if name != "jobs"} == {
            name: rows for name, rows in original.items() if name != "jobs"
        }
        assert len(copied_back["jobs"]) == ROWS_PER_TABLE + 1

        with pytest.raises(CopyRefused, match="not empty"):
            copy_database(sqlite, postgresql)
    finally:
        for database in (sqlite, postgresql, back):
            database.dispose()


def test_copy_command(tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    source_url = f"sqlite:///{tmp_path / 'neurolabel.db'}"
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{source_url}"\n')
    source = open_database(source_url)
    upgrade_to_head(source)
    with source.begin() as connection:
        queue.enqueue(connection, "link", "study-1")
    source.dispose()

    assert main(["db", "copy", "--to", postgres_url, "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "jobs: 1 rows" in out and "copied " in out
    assert main(["db", "copy", "--to", postgres_url, "--config", str(config)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["db", "copy", "--to", "mysql://x/y", "--config", str(config)]) == 2
