"""The lease keeper: renews this instance's leases, re-queues dead instances' jobs, releases its own on stop."""

from __future__ import annotations

import asyncio
import time

import sqlalchemy as sa

from daemon.store import queue
from daemon.store.database import Database
from daemon.store.leases import LeaseKeeper
from daemon.store.schema import jobs
from daemon.work.wakeup import WorkSignal


def _states(database: Database) -> dict[str, tuple[str, str | None]]:
    with database.connect() as connection:
        rows = connection.execute(sa.select(jobs.c.key, jobs.c.state, jobs.c.claimed_by)).all()
    return {row.key: (row.state, row.claimed_by) for row in rows}


async def test_keeper_renews_its_own_and_hands_dead_instances_work_back(database: Database) -> None:
    with database.begin() as connection:
        for key in ("mine", "dead"):
            queue.enqueue(connection, "classify", key)
    [mine] = queue.claim(database, ["classify"], "me", lease_seconds=0.001)
    [dead] = queue.claim(database, ["classify"], "gone", lease_seconds=0.001)
    signal = WorkSignal(asyncio.get_running_loop())
    keeper = LeaseKeeper(database, "me", lease_seconds=30, work_signal=signal)
    await keeper.start()
    try:
        assert _states(database) == {"mine": ("running", "me"), "dead": ("pending", None)}
        assert await signal.wait(["classify"], timeout=5)  # workers are woken for the recovered job
        assert keeper.health().up and "1 job lease(s) held" in keeper.health().detail
        with database.connect() as connection:
            lease = connection.execute(sa.select(jobs.c.lease_expires_at).where(jobs.c.id == mine.id)).scalar_one()
        assert (lease - queue.utcnow()).total_seconds() > 20
    finally:
        await keeper.stop(time.monotonic() + 5)
    # Stopping gives what this instance still held to the others at once.
    assert _states(database)["mine"] == ("pending", None)
    assert dead.id != mine.id
