"""Cluster locks: one holder at a time across connections (instances) on PostgreSQL; a no-op on SQLite."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from daemon.store.database import Database
from daemon.store.locks import cluster_lock, lock_key

NAME = "writeback:1.2.3"


def _waiting_on_advisory_locks(database: Database) -> int:
    with database.connect() as connection:
        return int(
            connection.execute(
                sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            ).scalar()
            or 0
        )


def _wait(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_one_holder_at_a_time(database: Database) -> None:
    assert lock_key(NAME) == lock_key(NAME) != lock_key("writeback:1.2.4")
    order: list[str] = []
    release = threading.Event()

    def hold(name: str) -> None:
        with cluster_lock(database, NAME):
            order.append(f"{name} in")
            if name == "first":
                release.wait(timeout=10)
            order.append(f"{name} out")

    first = threading.Thread(target=hold, args=("first",))
    first.start()
    _wait(lambda: order == ["first in"])
    second = threading.Thread(target=hold, args=("second",))
    second.start()
    with cluster_lock(database, "writeback:another-study"):
        pass  # another name is not held up
    if database.dialect == "postgresql":
        _wait(lambda: _waiting_on_advisory_locks(database) == 1)
        assert order == ["first in"], "the second holder must wait for the first"
    release.set()
    first.join(timeout=10)
    second.join(timeout=10)
    if database.dialect == "postgresql":
        assert order == ["first in", "first out", "second in", "second out"]
    assert sorted(order) == ["first in", "first out", "second in", "second out"]
