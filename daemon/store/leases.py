"""Component "leases": keeps this instance's job leases alive and hands dead instances' jobs to the living.

Every third of `[workers] lease_seconds` it renews the lease of each job this instance is running (one
UPDATE for all of them: the heartbeat) and puts jobs whose lease has passed back to pending, waking the
workers of their kinds. It starts before the workers and stops after them, so leases stay fresh while
they drain; on stop it puts whatever they left running back to pending for the other instances.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from daemon.store import queue
from daemon.store.database import Database
from daemon.work.wakeup import WorkSignal

if TYPE_CHECKING:
    from daemon.app import Health, Services

log = logging.getLogger("neurolabel.store.leases")

RENEWALS_PER_LEASE = 3


class LeaseKeeper:
    name = "leases"

    def __init__(self, database: Database, instance: str, lease_seconds: float, work_signal: WorkSignal) -> None:
        self._database = database
        self._instance = instance
        self._lease_seconds = lease_seconds
        self._work_signal = work_signal
        self._task: asyncio.Task[None] | None = None
        self._last_beat: float | None = None
        self._held = 0
        # A thread of its own: with every thread of the default pool busy on long jobs, a heartbeat queued
        # behind them would let this instance's leases pass while it is alive and working.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease-keeper")

    @property
    def interval(self) -> float:
        return self._lease_seconds / RENEWALS_PER_LEASE

    async def start(self) -> None:
        await self.beat()
        self._task = asyncio.create_task(self._loop(), name="lease-keeper")

    async def stop(self, deadline: float) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        released = await self._in_thread(queue.recover_interrupted, self._database, self._instance)
        self._executor.shutdown(wait=False)
        if released:
            log.info("released %d unfinished job(s) of %s to the queue", released, self._instance)

    def health(self) -> Health:
        from daemon.app import Health

        if self._last_beat is None or time.monotonic() - self._last_beat > self._lease_seconds:
            return Health(False, "job leases not renewed within the lease time")
        return Health(True, f"{self._held} job lease(s) held")

    async def beat(self) -> None:
        """Renew our leases, then re-queue the expired ones of any instance."""
        self._held = await self._in_thread(queue.renew_leases, self._database, self._instance, self._lease_seconds)
        recovered = await self._in_thread(queue.recover_expired, self._database)
        self._last_beat = time.monotonic()
        for kind, count in recovered.items():
            log.warning("lease expired: %d %s job(s) put back to pending", count, kind)
            self._work_signal.notify(kind)

    async def _in_thread(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except Exception:
                log.exception("renewing job leases failed; trying again in %.1f s", self.interval)


def build_lease_keeper(services: Services) -> LeaseKeeper:
    return LeaseKeeper(
        services.database, services.instance_name, services.config.workers.lease_seconds, services.work_signal
    )
