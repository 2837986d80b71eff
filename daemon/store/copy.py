"""`neurolabel db copy --to URL`: copy every row of the configured database into another, empty one.

For moving from SQLite to PostgreSQL (or back, as a rollback). The target is first migrated to the
head revision; both must then be at the same revision. Tables are copied parents first (foreign keys),
in batches, inside one transaction on the target, so a failed copy leaves the target as empty as it
was. PostgreSQL's id sequences are then moved past the copied ids. Stop the daemon first: rows written
while the copy runs would be missed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from daemon.store.database import Database
from daemon.store.migrate import current_revision, upgrade_to_head
from daemon.store.schema import metadata

log = logging.getLogger("neurolabel.store.copy")

BATCH_ROWS = 2000


class CopyRefused(Exception):
    """The copy cannot start (the target has rows, or the revisions differ); the message says why."""


@dataclass(frozen=True)
class CopySummary:
    rows: dict[str, int]
    seconds: float

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def copy_database(
    source: Database,
    target: Database,
    *,
    batch_rows: int = BATCH_ROWS,
    progress: Callable[[str, int], None] | None = None,
) -> CopySummary:
    """Copy all rows of `source` into the empty `target` (migrated to head first); verify the counts."""
    started = time.monotonic()
    upgrade_to_head(target)
    source_revision, target_revision = current_revision(source), current_revision(target)
    if source_revision != target_revision:
        raise CopyRefused(
            f"the source database is at revision {source_revision or '(empty)'} and the target at "
            f"{target_revision}: run `neurolabel db upgrade` on the source first"
        )
    tables = metadata.sorted_tables
    with target.connect() as connection:
        occupied = [table.name for table in tables if _count(connection, table)]
    if occupied:
        raise CopyRefused(f"the target database is not empty (rows in {', '.join(occupied)}); copy into a new database")
    copied: dict[str, int] = {}
    with source.connect() as reader, target.begin() as writer:
        for table in tables:
            count = 0
            order = list(table.primary_key.columns) or list(table.columns)
            result = reader.execution_options(yield_per=batch_rows).execute(sa.select(table).order_by(*order))
            for rows in result.mappings().partitions(batch_rows):
                writer.execute(table.insert(), [dict(row) for row in rows])
                count += len(rows)
            copied[table.name] = count
            if progress is not None:
                progress(table.name, count)
        if target.dialect == "postgresql":
            _advance_sequences(writer)
    with target.connect() as connection:
        for table in tables:
            found = _count(connection, table)
            if found != copied[table.name]:
                raise RuntimeError(f"{table.name}: copied {copied[table.name]} rows but the target holds {found}")
    summary = CopySummary(rows=copied, seconds=time.monotonic() - started)
    log.info("copied %d rows in %d tables in %.1f s", summary.total, len(copied), summary.seconds)
    return summary


def _count(connection: sa.Connection, table: sa.Table) -> int:
    return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)


def _advance_sequences(connection: sa.Connection) -> None:
    """After explicit ids were inserted, make each serial column's sequence continue after the largest."""
    for table in metadata.sorted_tables:
        column = table.autoincrement_column
        if column is None:
            continue
        connection.execute(
            sa.text(
                "SELECT setval(pg_get_serial_sequence(:table, :column), "
                f"COALESCE((SELECT max({column.name}) FROM {table.name}), 0) + 1, false)"
            ),
            {"table": table.name, "column": column.name},
        )
