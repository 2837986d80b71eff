"""Named locks held across every instance sharing one database (PostgreSQL advisory locks).

For work on shared files that a database transaction cannot fence, e.g. rewriting one study's DICOM
files: `with cluster_lock(database, f"writeback:{study_uid}")` lets one instance at a time in. The lock is
held by a connection of its own and released when the block ends (or by the server if that connection
dies with its instance). On SQLite there is one instance per database, so it is a no-op: in-process
locks (daemon/work/writeback.py's StudyLocks) cover that case.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from daemon.store.database import Database


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for `name` (PostgreSQL's advisory lock key space)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


@contextmanager
def cluster_lock(database: Database, name: str) -> Iterator[None]:
    """Hold the lock `name` for the block, waiting for any other instance holding it."""
    if database.dialect != "postgresql":
        yield
        return
    key = lock_key(name)
    with database.engine.connect() as connection:
        connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()
