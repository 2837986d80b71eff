"""Study stability: quiet period decided by the database, one study_stable job per time a study becomes stable."""

from __future__ import annotations

import asyncio
import datetime as dt

import sqlalchemy as sa

from daemon.dicom.stability import (
    STUDY_STABLE_JOB,
    StabilityTracker,
    Verdict,
    check_study,
    mark_due_studies,
    mark_stable,
    stable_job_key,
)
from daemon.store.database import Database
from daemon.store.schema import audit_events, jobs, studies
from daemon.work.wakeup import WorkSignal
from tests.dicom.datasets import new_uid
from tests.work.conftest import wait_for

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


def add_study(database: Database, last_received: dt.datetime, state: str = "receiving") -> str:
    uid = new_uid()
    with database.begin() as connection:
        connection.execute(studies.insert().values(
            study_instance_uid=uid, instance_count=3, total_bytes=30, first_received_at=last_received,
            last_received_at=last_received, state=state, stable_count=0))
    return uid


def study_row(database: Database, uid: str) -> sa.Row:
    with database.connect() as connection:
        return connection.execute(sa.select(studies).where(studies.c.study_instance_uid == uid)).one()


def stable_jobs(database: Database) -> list[tuple[str, dict]]:
    with database.connect() as connection:
        return [(row.key, row.payload) for row in connection.execute(
            sa.select(jobs.c.key, jobs.c.payload).where(jobs.c.kind == STUDY_STABLE_JOB).order_by(jobs.c.id))]


def touch(database: Database, uid: str, when: dt.datetime) -> None:
    """What the committer does when an instance arrives: newer last_received_at, back to receiving."""
    with database.begin() as connection:
        connection.execute(studies.update().where(studies.c.study_instance_uid == uid).values(
            last_received_at=when, state="receiving", stable_at=None))


def test_mark_stable_after_the_quiet_period_only(database: Database) -> None:
    uid = add_study(database, NOW - dt.timedelta(seconds=30))
    with database.begin() as connection:
        early = mark_stable(connection, uid, 60, NOW)
    assert early.verdict is Verdict.NOT_YET and abs(early.remaining_seconds - 30) < 1e-6
    assert study_row(database, uid).state == "receiving"
    with database.begin() as connection:
        assert mark_stable(connection, uid, 20, NOW).verdict is Verdict.STABLE
    row = study_row(database, uid)
    assert (row.state, row.stable_count) == ("stable", 1)
    assert row.stable_at == NOW
    assert stable_jobs(database) == [(stable_job_key(uid, 1), {"study_instance_uid": uid})]
    with database.begin() as connection:
        assert mark_stable(connection, uid, 20, NOW).verdict is Verdict.GONE
        assert mark_stable(connection, new_uid(), 20, NOW).verdict is Verdict.GONE
    with database.connect() as connection:
        audit = connection.execute(sa.select(audit_events.c.kind, audit_events.c.identifiers)).all()
    assert [(kind, ids["study_instance_uid"]) for kind, ids in audit] == [("dicom.study", uid)]


def test_a_reopened_study_becomes_stable_again_with_a_new_job(database: Database) -> None:
    uid = add_study(database, NOW - dt.timedelta(seconds=100))
    with database.begin() as connection:
        mark_stable(connection, uid, 60, NOW)
    touch(database, uid, NOW + dt.timedelta(seconds=10))
    with database.begin() as connection:
        assert mark_stable(connection, uid, 60, NOW + dt.timedelta(seconds=30)).verdict is Verdict.NOT_YET
        assert mark_stable(connection, uid, 60, NOW + dt.timedelta(seconds=71)).verdict is Verdict.STABLE
    assert [key for key, _ in stable_jobs(database)] == [stable_job_key(uid, 1), stable_job_key(uid, 2)]
    assert study_row(database, uid).stable_count == 2


def test_mark_due_studies_for_the_scheduler(database: Database) -> None:
    due = add_study(database, NOW - dt.timedelta(seconds=120))
    recent = add_study(database, NOW - dt.timedelta(seconds=5))
    done = add_study(database, NOW - dt.timedelta(seconds=500), state="stable")
    assert mark_due_studies(database, 60, now=NOW) == [due]
    assert [study_row(database, uid).state for uid in (due, recent, done)] == ["stable", "receiving", "stable"]
    assert mark_due_studies(database, 60, now=NOW) == []


async def test_tracker_marks_a_study_stable_after_arrivals_stop(database: Database) -> None:
    signal = WorkSignal(asyncio.get_running_loop())
    tracker = StabilityTracker(database, 0.3, signal, asyncio.get_running_loop(), notify_on_arrival=("study",))
    uid = add_study(database, dt.datetime.now(dt.timezone.utc))
    try:
        tracker.arrived_threadsafe([uid])
        assert await signal.wait(["study"], timeout=5)
        # Arrivals keep pushing the check back.
        for _ in range(3):
            await asyncio.sleep(0.15)
            touch(database, uid, dt.datetime.now(dt.timezone.utc))
            tracker.arrived([uid])
        assert study_row(database, uid).state == "receiving"
        assert await signal.wait([STUDY_STABLE_JOB], timeout=10)
        assert study_row(database, uid).state == "stable"
        assert tracker.pending == 0
    finally:
        await tracker.close()


async def test_tracker_recovers_studies_left_receiving(database: Database) -> None:
    long_quiet = add_study(database, dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=3600))
    fresh = add_study(database, dt.datetime.now(dt.timezone.utc))
    tracker = StabilityTracker(database, 1.0, WorkSignal(asyncio.get_running_loop()), asyncio.get_running_loop())
    try:
        assert await tracker.recover() == 2
        await wait_for(lambda: study_row(database, long_quiet).state == "stable", timeout=10, what="recovered study")
        assert study_row(database, fresh).state == "receiving"
        await wait_for(lambda: study_row(database, fresh).state == "stable", timeout=10, what="fresh study")
    finally:
        await tracker.close()


def test_check_study_is_one_transaction(database: Database) -> None:
    uid = add_study(database, dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=10))
    assert check_study(database, uid, 5).verdict is Verdict.STABLE


async def test_arrivals_from_threads_while_a_hand_off_is_pending_are_not_lost(database: Database) -> None:
    loop = asyncio.get_running_loop()
    tracker = StabilityTracker(database, 600, WorkSignal(loop), loop)
    first, second, third = (add_study(database, dt.datetime.now(dt.timezone.utc)) for _ in range(3))
    try:
        await asyncio.to_thread(tracker.arrived_threadsafe, [first])
        await wait_for(lambda: tracker.pending == 1, timeout=5, what="first arrival")
        # Within the pause after a hand-off: these wait for the next one, which must still come.
        await asyncio.to_thread(tracker.arrived_threadsafe, [second])
        await asyncio.to_thread(tracker.arrived_threadsafe, [third])
        await wait_for(lambda: tracker.pending == 3, timeout=5, what="arrivals during the pause")
    finally:
        await tracker.close()
