"""When a study is complete: DICOM has no such message, so a study is stable after a quiet period.

The database decides: `mark_stable` turns a study stable only if its last
instance arrived at least `quiet_seconds` ago, and in the same transaction
enqueues the `study_stable` job later stages wait for (keyed by how many
times the study became stable, so a reopened study is processed again).
`StabilityTracker` only decides *when to ask*: one asyncio timer per
receiving study, pushed back by each arrival, and a recovery pass on start
for studies a previous run left receiving. `mark_due_studies` is the same
check for every due study at once, for the scheduler as a safety net.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import Connection

from daemon.audit import trail
from daemon.dicom.index_store import RECEIVING, STABLE
from daemon.store.database import Database
from daemon.store.queue import enqueue
from daemon.store.schema import studies
from daemon.work.wakeup import WorkSignal

log = logging.getLogger("neurolabel.dicom.stability")

STUDY_STABLE_JOB = "study_stable"
AUDIT_STUDY = "dicom.study"
# A failed check (database unavailable) is retried after this long.
RETRY_SECONDS = 5.0
# While instances keep arriving, arrivals from other threads reach the loop at most once per this long (the first
# after a pause at once): one loop wake-up per commit cost the receiving threads CPU and the GIL.
HANDOFF_SECONDS = 0.05


class Verdict(enum.Enum):
    STABLE = "stable"
    NOT_YET = "not_yet"
    GONE = "gone"  # no such study, or not receiving (already stable)


@dataclass(frozen=True)
class Check:
    verdict: Verdict
    remaining_seconds: float = 0.0


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def stable_job_key(study_instance_uid: str, stable_count: int) -> str:
    return f"study:{study_instance_uid}:{stable_count}"


def mark_stable(connection: Connection, study_instance_uid: str, quiet_seconds: float, now: dt.datetime) -> Check:
    """Make the study stable if it has been quiet long enough; enqueue its study_stable job and audit it."""
    query = sa.select(studies.c.id, studies.c.state, studies.c.last_received_at, studies.c.stable_count,
                      studies.c.instance_count).where(studies.c.study_instance_uid == study_instance_uid)
    if connection.dialect.name == "postgresql":
        query = query.with_for_update()
    row = connection.execute(query).first()
    if row is None or row.state != RECEIVING:
        return Check(Verdict.GONE)
    quiet_for = (now - _aware(row.last_received_at)).total_seconds()
    if quiet_for < quiet_seconds:
        return Check(Verdict.NOT_YET, quiet_seconds - quiet_for)
    count = row.stable_count + 1
    connection.execute(
        studies.update().where(studies.c.id == row.id).values(state=STABLE, stable_at=now, stable_count=count)
    )
    enqueue(connection, STUDY_STABLE_JOB, key=stable_job_key(study_instance_uid, count),
            payload={"study_instance_uid": study_instance_uid})
    trail.record(connection, AUDIT_STUDY, trail.SUCCESS, identifiers={"study_instance_uid": study_instance_uid},
                 detail=f"stable after {quiet_for:.1f} s without new instances ({row.instance_count} instances)")
    log.info("study %s stable (%d instances, quiet %.1f s, time %d)", study_instance_uid, row.instance_count,
             quiet_for, count)
    return Check(Verdict.STABLE)


def check_study(database: Database, study_instance_uid: str, quiet_seconds: float) -> Check:
    with database.begin() as connection:
        return mark_stable(connection, study_instance_uid, quiet_seconds, utcnow())


def receiving_studies(database: Database) -> dict[str, dt.datetime]:
    """Study Instance UID -> last received time, for every study still receiving."""
    with database.connect() as connection:
        rows = connection.execute(
            sa.select(studies.c.study_instance_uid, studies.c.last_received_at).where(studies.c.state == RECEIVING)
        ).all()
    return {row.study_instance_uid: _aware(row.last_received_at) for row in rows}


def mark_due_studies(
    database: Database, quiet_seconds: float, work_signal: WorkSignal | None = None, now: dt.datetime | None = None
) -> list[str]:
    """Mark every receiving study quiet for `quiet_seconds` stable (for the scheduler). Returns their UIDs."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=quiet_seconds)
    marked: list[str] = []
    with database.begin() as connection:
        due = connection.execute(
            sa.select(studies.c.study_instance_uid)
            .where(studies.c.state == RECEIVING, studies.c.last_received_at <= cutoff)
            .order_by(studies.c.last_received_at)
        ).scalars().all()
        for uid in due:
            if mark_stable(connection, uid, quiet_seconds, now).verdict is Verdict.STABLE:
                marked.append(uid)
    if marked and work_signal is not None:
        work_signal.notify(STUDY_STABLE_JOB)
    return marked


class StabilityTracker:
    """Schedules the stability check of each receiving study; runs on the event loop (use the *_threadsafe entry)."""

    def __init__(
        self,
        database: Database,
        quiet_seconds: float,
        work_signal: WorkSignal,
        loop: asyncio.AbstractEventLoop,
        notify_on_arrival: tuple[str, ...] = (),
    ) -> None:
        self._database = database
        self._quiet = quiet_seconds
        self._signal = work_signal
        self._loop = loop
        self._notify_on_arrival = notify_on_arrival
        self._due: dict[str, float] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._checking: dict[str, asyncio.Task[None]] = {}
        self._closed = False
        # Arrivals reported from other threads, handed to the loop in one call however many come meanwhile; while a
        # hand-off is pending or was made less than HANDOFF_SECONDS ago, new ones wait for the next.
        self._arrivals: set[str] = set()
        self._arrivals_lock = threading.Lock()
        self._handoff_pending = False
        self._next_handoff: asyncio.TimerHandle | None = None

    @property
    def pending(self) -> int:
        return len(self._due)

    def arrived_threadsafe(self, study_uids: Iterable[str]) -> None:
        """From any thread: these studies just received instances (also notifies `notify_on_arrival` kinds)."""
        with self._arrivals_lock:
            self._arrivals.update(study_uids)
            if self._handoff_pending:
                return
            self._handoff_pending = True
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._take_arrivals)

    def _take_arrivals(self) -> None:
        """On the loop: take what arrived; if anything did, look again in HANDOFF_SECONDS (arrivals meanwhile wait
        for that), else let the next arrival hand off at once."""
        self._next_handoff = None
        with self._arrivals_lock:
            arrived, self._arrivals = self._arrivals, set()
            self._handoff_pending = bool(arrived) and not self._closed
        if not arrived:
            return
        self.arrived(sorted(arrived))
        for kind in self._notify_on_arrival:
            self._signal.notify(kind)
        if not self._closed:
            self._next_handoff = self._loop.call_later(HANDOFF_SECONDS, self._take_arrivals)

    def arrived(self, study_uids: list[str], delay: float | None = None) -> None:
        if self._closed:
            return
        due = self._loop.time() + (self._quiet if delay is None else delay)
        for uid in study_uids:
            self._due[uid] = max(self._due.get(uid, 0.0), due)
            if uid not in self._timers and uid not in self._checking:
                self._schedule(uid)

    async def recover(self) -> int:
        """Schedule the studies a previous run left receiving, each for when its quiet period ends."""
        left = await asyncio.to_thread(receiving_studies, self._database)
        now = utcnow()
        for uid, last in left.items():
            remaining = max(0.0, self._quiet - (now - last).total_seconds())
            self.arrived([uid], delay=remaining)
        return len(left)

    async def close(self) -> None:
        self._closed = True
        if self._next_handoff is not None:
            self._next_handoff.cancel()
            self._next_handoff = None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        checks = list(self._checking.values())
        for task in checks:
            task.cancel()
        await asyncio.gather(*checks, return_exceptions=True)

    def _schedule(self, uid: str) -> None:
        self._timers[uid] = self._loop.call_at(self._due[uid], self._fire, uid)

    def _fire(self, uid: str) -> None:
        self._timers.pop(uid, None)
        due = self._due.get(uid)
        if due is None or self._closed:
            return
        if due > self._loop.time():
            self._schedule(uid)  # pushed back by arrivals since it was set
            return
        self._checking[uid] = self._loop.create_task(self._check(uid))

    async def _check(self, uid: str) -> None:
        started = self._loop.time()
        try:
            result = await asyncio.to_thread(check_study, self._database, uid, self._quiet)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("stability check of study %s failed (%s); retrying in %.0f s", uid, type(exc).__name__,
                        RETRY_SECONDS)
            result = Check(Verdict.NOT_YET, RETRY_SECONDS)
        finally:
            self._checking.pop(uid, None)
        if self._closed:
            return
        if result.verdict is Verdict.STABLE:
            self._signal.notify(STUDY_STABLE_JOB)
        if result.verdict is Verdict.NOT_YET:
            self._due[uid] = max(self._due.get(uid, 0.0), self._loop.time() + result.remaining_seconds)
            self._schedule(uid)
        elif self._due.get(uid, 0.0) > started:
            self._schedule(uid)  # arrivals during the check: the database decides on the next one
        else:
            self._due.pop(uid, None)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)
