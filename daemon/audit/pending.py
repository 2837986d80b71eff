"""Audit events that happen outside any transaction (an HL7 ACK written to the socket), written shortly after.

The HL7 listener commits a message, then writes its ACK; only once the ACK is on the wire is there
something to audit, and a transaction per ACK would cost a commit per message. `PendingAudit` collects
those events and writes them together every `interval` seconds, and once more when stopped, through
the caller's `run` (the listener's writer thread, so they never compete with the group commit).
Events still pending when the process dies are lost; the message's own audit row (written with the
message) remains.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from daemon.audit import trail
from daemon.audit.trail import AuditEvent
from daemon.store.database import Database
from daemon.store.driver import cursor_of

if TYPE_CHECKING:
    from daemon.hl7.intake import Handled

log = logging.getLogger("neurolabel.audit")

HL7_ACK = "hl7.ack"
FLUSH_SECONDS = 1.0
# Beyond this many unwritten events (the database is down), the oldest are dropped and counted.
MAX_PENDING = 100_000

# Acknowledgement code -> audit outcome (original and enhanced mode).
_ACK_OUTCOME = {"AA": trail.SUCCESS, "CA": trail.SUCCESS, "AE": trail.FAILURE, "CE": trail.FAILURE,
                "AR": trail.REJECTED, "CR": trail.REJECTED}


def ack_event(peer: str, handled: Handled, seconds: float) -> AuditEvent:
    """The "hl7.ack" event for the ACK(s) just written for one message (pure)."""
    outcome = handled.outcome
    header = outcome.header
    codes = [code.value for code in handled.ack_codes]
    actor = f"{header.sending_application}^{header.sending_facility}@{peer}" if header else peer
    worst = trail.SUCCESS
    for code in codes:
        result = _ACK_OUTCOME.get(code, trail.FAILURE)
        if result != trail.SUCCESS:
            worst = result
    return AuditEvent(
        HL7_ACK,
        worst,
        actor=actor[:128],
        identifiers={
            "control_id": header.control_id if header else None,
            "message_id": outcome.message_id,
            "ack_codes": codes,
        },
        duration_ms=round(seconds * 1000, 3),
        at=dt.datetime.now(dt.timezone.utc),
    )


class PendingAudit:
    """Collects audit events from any thread; `start` flushes them periodically through `run`."""

    def __init__(
        self,
        database: Database,
        run: Callable[[Callable[[], None]], Awaitable[None]],
        *,
        interval: float = FLUSH_SECONDS,
    ) -> None:
        self._database = database
        # The listener writes one event per ACK: compiled once, run on the driver's cursor (daemon/store/driver.py).
        self._audit = trail.DriverAudit.for_dialect(database.engine.dialect)
        self._run = run
        self._interval = interval
        self._events: list[AuditEvent] = []
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def add(self, event: AuditEvent) -> None:
        with self._lock:
            self._events.append(event)
            if len(self._events) > MAX_PENDING:
                excess = len(self._events) - MAX_PENDING
                del self._events[:excess]
                self.dropped += excess

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="pending-audit")

    async def stop(self) -> None:
        """Write what is pending, then stop (call before the writer behind `run` stops)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            try:
                await self._run(self.flush)
            except Exception as exc:  # the database may be briefly unavailable: the events wait for the next round
                log.warning("audit events not written yet: %s", type(exc).__name__)
            if self._stopping:
                return

    def flush(self) -> int:
        """Write the pending events in one transaction (blocking); on failure they stay pending."""
        with self._lock:
            events, self._events = self._events, []
        if not events:
            return 0
        try:
            with self._database.begin() as connection:
                cursor = cursor_of(connection)
                self._audit.record_many(cursor, events)
                cursor.close()
        except BaseException:
            with self._lock:
                self._events[:0] = events
            raise
        return len(events)
