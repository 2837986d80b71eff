"""Jobs enqueued by one instance wake the workers of the others (PostgreSQL LISTEN/NOTIFY), on commit only."""

from __future__ import annotations

import asyncio
import time

import pytest

from daemon.store import queue
from daemon.store.database import Database
from daemon.store.notify import JobNotifications
from daemon.work.wakeup import WorkSignal


async def test_an_enqueue_elsewhere_wakes_this_instance(database: Database, database_url: str) -> None:
    if not database.supports_skip_locked:
        pytest.skip("SQLite: one instance per database, nothing to hear")
    signal = WorkSignal(asyncio.get_running_loop())
    notifications = JobNotifications(database_url, signal)
    await notifications.start()
    try:
        assert notifications.health().up

        def rolled_back() -> None:
            with pytest.raises(RuntimeError), database.begin() as connection:
                queue.enqueue(connection, "link", "never-committed")
                raise RuntimeError("rollback")

        await asyncio.to_thread(rolled_back)
        assert not await signal.wait(["link"], timeout=0.5), "a rolled-back enqueue must not wake anyone"

        def committed() -> None:
            with database.begin() as connection:
                queue.enqueue(connection, "link", "study-1")

        started = time.monotonic()
        await asyncio.to_thread(committed)
        assert await signal.wait(["link"], timeout=10)
        assert time.monotonic() - started < 5
        assert notifications.received >= 1
    finally:
        await notifications.stop(time.monotonic() + 5)
