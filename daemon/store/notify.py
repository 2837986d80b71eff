"""Component "job-notifications": wakes this instance's workers when another instance enqueues work.

Workers sleep on the in-process WorkSignal, which only this instance's intake notifies. With several
instances on one PostgreSQL, `queue.enqueue` also sends a NOTIFY on NOTIFY_CHANNEL (delivered when its
transaction commits); this component LISTENs on a connection of its own and passes each job kind to the
WorkSignal. SQLite has a single instance, so the component is not built there. If the connection
drops, it reconnects; meanwhile the workers still find new work on their periodic look at the queue.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url

from daemon.store.queue import NOTIFY_CHANNEL
from daemon.work.wakeup import WorkSignal

if TYPE_CHECKING:
    from daemon.app import Health, Services

log = logging.getLogger("neurolabel.store.notify")

RECONNECT_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)


def libpq_conninfo(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a libpq URL (psycopg knows no `+driver`)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class JobNotifications:
    name = "job-notifications"

    def __init__(self, url: str, work_signal: WorkSignal) -> None:
        self._conninfo = libpq_conninfo(url)
        self._work_signal = work_signal
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self.received = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="job-notifications")
        # Start listening before the listeners accept work, but do not hold the start up if it cannot.
        try:
            await asyncio.wait_for(self._listening.wait(), timeout=10)
        except asyncio.TimeoutError:
            log.warning("not yet listening for other instances' jobs; retrying in the background")

    async def stop(self, deadline: float) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def health(self) -> Health:
        from daemon.app import Health

        if self._listening.is_set():
            return Health(True, f"listening on {NOTIFY_CHANNEL}; {self.received} notification(s)")
        return Health(False, f"not listening on {NOTIFY_CHANNEL} (reconnecting)")

    async def _listen_forever(self) -> None:
        import psycopg

        failures = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as connection:
                    await connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self._listening.set()
                    failures = 0
                    async for notification in connection.notifies():
                        self.received += 1
                        self._work_signal.notify(notification.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a dropped connection is retried, never fatal
                self._listening.clear()
                delay = RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)]
                failures += 1
                log.warning("listening for jobs failed (%s); reconnecting in %.1f s", type(exc).__name__, delay)
                await asyncio.sleep(delay)


def build_job_notifications(services: Services) -> JobNotifications | None:
    if not services.database.supports_skip_locked:  # SQLite: one instance, nothing to hear from
        return None
    return JobNotifications(services.config.database.url, services.work_signal)
