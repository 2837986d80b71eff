"""The work queue on SQLite and PostgreSQL: enqueue, claim, complete, retry, defer, leases and recovery."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter

import pytest
import sqlalchemy as sa

from daemon.store import queue
from daemon.store.database import Database
from daemon.store.driver import cursor_of
from daemon.store.schema import jobs


def _state(database: Database, job_id: int) -> sa.Row:
    with database.connect() as connection:
        return connection.execute(sa.select(jobs).where(jobs.c.id == job_id)).one()


def _enqueue(database: Database, kind: str, key: str, **payload: object) -> int | None:
    with database.begin() as connection:
        return queue.enqueue(connection, kind, key, payload)


def test_enqueue_is_deduplicated_while_unfinished(database: Database) -> None:
    first = _enqueue(database, "classify", "report-1", report_id=1)
    assert first is not None
    assert _enqueue(database, "classify", "report-1") is None
    assert _enqueue(database, "link", "report-1") is not None
    [job] = queue.claim(database, ["classify"], "a")
    assert _enqueue(database, "classify", "report-1") is None
    with database.begin() as connection:
        queue.complete(connection, job)
    again = _enqueue(database, "classify", "report-1")
    assert again is not None and again != first


def test_claim_takes_due_jobs_in_order_with_payload_and_lease(database: Database) -> None:
    ids = [_enqueue(database, "classify", f"r{n}", n=n) for n in range(3)]
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    with database.begin() as connection:
        queue.enqueue(connection, "classify", "future", not_before=later)
    claimed = queue.claim(database, ["classify"], "worker-a", limit=10, lease_seconds=30)
    assert [job.id for job in claimed] == ids
    assert [job.payload["n"] for job in claimed] == [0, 1, 2]
    assert {job.attempts for job in claimed} == {1}
    assert {job.claimed_by for job in claimed} == {"worker-a"}
    row = _state(database, claimed[0].id)
    assert row.state == queue.RUNNING and row.claimed_by == "worker-a"
    # Timestamps come back timezone-aware UTC on both backends.
    assert row.lease_expires_at.tzinfo is not None and row.claimed_at.utcoffset() == dt.timedelta(0)
    assert 29 <= (row.lease_expires_at - row.claimed_at).total_seconds() <= 31
    assert queue.claim(database, ["classify"], "worker-b", limit=10) == []
    assert queue.claim(database, ["other"], "worker-b") == []


def test_complete_retry_and_fail(database: Database) -> None:
    job_id = _enqueue(database, "link", "study-1")
    [job] = queue.claim(database, ["link"], "a")
    with database.begin() as connection:
        assert queue.retry_later(connection, job, "boom", max_attempts=3, base_seconds=0.001, max_seconds=0.001)
    row = _state(database, job_id)
    assert row.state == queue.PENDING and row.last_error == "boom" and row.claimed_by is None
    (job,) = _wait_claim(database, "link", "a")
    assert job.attempts == 2
    with database.begin() as connection:
        assert not queue.retry_later(connection, job, "boom again", max_attempts=2, base_seconds=1, max_seconds=1)
    assert _state(database, job_id).state == queue.FAILED
    assert queue.retry_failed(database) == 1
    (job,) = _wait_claim(database, "link", "a")
    assert job.attempts == 1
    with database.begin() as connection:
        queue.complete(connection, job)
        queue.complete(connection, job)  # the handler, then the runner: harmless
    row = _state(database, job_id)
    assert row.state == queue.DONE and row.finished_at is not None and row.lease_expires_at is None


def test_defer_gives_the_job_back_without_counting_an_attempt(database: Database) -> None:
    job_id = _enqueue(database, "classify", "r1")
    [job] = queue.claim(database, ["classify"], "a")
    with database.begin() as connection:
        queue.defer(connection, job, 3600)
    row = _state(database, job_id)
    assert row.state == queue.PENDING and row.attempts == 0
    assert queue.claim(database, ["classify"], "a") == []


def test_retry_failed_revives_only_the_newest_failure_of_a_key(database: Database) -> None:
    for _ in range(2):
        _enqueue(database, "link", "same")
        [job] = queue.claim(database, ["link"], "a")
        with database.begin() as connection:
            queue.retry_later(connection, job, "no", max_attempts=0, base_seconds=1, max_seconds=1)
    assert queue.depths(database) == {"link": {"failed": 2}}
    assert queue.retry_failed(database) == 1
    assert queue.retry_failed(database) == 0  # the other failure's key is pending again
    assert queue.depths(database) == {"link": {"failed": 1, "pending": 1}}


def test_expired_lease_is_recovered_and_the_old_owner_is_fenced(database: Database) -> None:
    job_id = _enqueue(database, "writeback", "study-1")
    [stale] = queue.claim(database, ["writeback"], "instance-a", lease_seconds=0.001)
    _enqueue(database, "writeback", "study-2")
    [alive] = queue.claim(database, ["writeback"], "instance-b", lease_seconds=3600)
    now = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    assert queue.recover_expired(database, now) == {"writeback": 1}
    assert _state(database, alive.id).state == queue.RUNNING
    [taken] = queue.claim(database, ["writeback"], "instance-b")
    assert taken.id == job_id and taken.attempts == 2
    # The old owner wakes up: its completion raises, so its transaction (with its writes) rolls back.
    with pytest.raises(queue.LeaseLost):
        with database.begin() as connection:
            connection.execute(jobs.update().where(jobs.c.id == job_id).values(last_error="written by a"))
            queue.complete(connection, stale)
    assert _state(database, job_id).last_error is None
    with database.begin() as connection:
        assert not queue.retry_later(connection, stale, "late", max_attempts=5, base_seconds=1, max_seconds=1)
        queue.defer(connection, stale, 60)
    row = _state(database, job_id)
    assert row.state == queue.RUNNING and row.claimed_by == "instance-b"
    with database.begin() as connection:
        queue.complete(connection, taken)
    assert _state(database, job_id).state == queue.DONE


def test_renew_keeps_a_lease_alive(database: Database) -> None:
    _enqueue(database, "classify", "r1")
    [job] = queue.claim(database, ["classify"], "a", lease_seconds=0.001)
    assert queue.renew_leases(database, "a", 3600) == 1
    assert queue.renew_leases(database, "b", 3600) == 0
    assert queue.recover_expired(database) == {}
    assert _state(database, job.id).state == queue.RUNNING


def test_recovery_at_start(database: Database) -> None:
    for key, owner, lease in (("mine", "me", 3600), ("live", "other", 3600), ("dead", "gone", 0.001)):
        _enqueue(database, "classify", key)
        queue.claim(database, ["classify"], owner, lease_seconds=lease)
    recovered = queue.recover_at_start(database, "me")
    with database.connect() as connection:
        states = dict(connection.execute(sa.select(jobs.c.key, jobs.c.state)).all())
    if database.dialect == "sqlite":
        # One instance per SQLite file: whatever was running was ours.
        assert recovered == 3 and set(states.values()) == {queue.PENDING}
    else:
        assert recovered == 2 and states == {"mine": "pending", "live": "running", "dead": "pending"}


def test_concurrent_claimers_never_share_a_job(database: Database) -> None:
    total, claimers = 300, 6
    with database.begin() as connection:
        for n in range(total):
            queue.enqueue(connection, "classify", f"r{n}")
    seen: Counter[int] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(claimers)

    def hammer(name: str) -> None:
        try:
            start.wait()
            while True:
                claimed = queue.claim(database, ["classify"], name, limit=3)
                if not claimed:
                    return
                with database.begin() as connection:
                    for job in claimed:
                        queue.complete(connection, job)
                with lock:
                    seen.update(job.id for job in claimed)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(f"claimer-{n}",)) for n in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert len(seen) == total and set(seen.values()) == {1}
    assert queue.depths(database) == {"classify": {"done": total}}


def test_concurrent_enqueues_of_one_key_make_one_job(database: Database) -> None:
    writers = 8
    start = threading.Barrier(writers)
    results: list[int | None] = []
    errors: list[BaseException] = []

    def add() -> None:
        try:
            start.wait()
            results.append(_enqueue(database, "link", "study-9"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=add) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len([r for r in results if r is not None]) == 1
    assert queue.depths(database) == {"link": {"pending": 1}}


def test_naive_and_offset_timestamps_are_stored_as_utc(database: Database) -> None:
    plus_two = dt.timezone(dt.timedelta(hours=2))
    due = dt.datetime(2030, 1, 1, 14, 0, tzinfo=plus_two)
    with database.begin() as connection:
        job_id = queue.enqueue(connection, "classify", "tz", not_before=due)
    row = _state(database, job_id)
    assert row.not_before == due and row.not_before.hour == 12 and row.not_before.tzinfo is not None


def _wait_claim(database: Database, kind: str, worker: str, timeout: float = 10.0) -> list[queue.Job]:
    """Claim once the job's short backoff has passed (polls the queue, with a deadline)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        claimed = queue.claim(database, [kind], worker)
        if claimed:
            return claimed
        time.sleep(0.01)
    raise AssertionError(f"no {kind} job became due within {timeout} s")


def test_recovery_skips_rows_locked_by_a_live_transaction(database: Database) -> None:
    if not database.supports_skip_locked:
        pytest.skip("SQLite has one writer at a time; nothing to skip")
    _enqueue(database, "classify", "locked")
    _enqueue(database, "classify", "free")
    claimed = queue.claim(database, ["classify"], "frozen", limit=2, lease_seconds=0.001)
    locked = next(job for job in claimed if job.key == "locked")
    with database.begin() as holder:
        # An instance frozen in the middle of a transaction on one of its jobs.
        holder.execute(sa.select(jobs.c.id).where(jobs.c.id == locked.id).with_for_update())
        result: list[dict[str, int]] = []
        thread = threading.Thread(target=lambda: result.append(queue.recover_expired(database)))
        thread.start()
        thread.join(timeout=10)
        assert not thread.is_alive(), "recovery waited for the lock"
    assert result == [{"classify": 1}]
    assert _state(database, locked.id).state == queue.RUNNING
    assert queue.recover_expired(database) == {"classify": 1}


@pytest.mark.parametrize("via", ["connection", "driver"])
def test_enqueue_many_skips_active_and_repeated_keys_in_order(database: Database, via: str) -> None:
    """`enqueue_many` and its compiled form on the DBAPI cursor (`DriverEnqueue`, HL7 intake's) alike."""
    driver = queue.DriverEnqueue.for_dialect(database.engine.dialect)

    def enqueue_many(connection: sa.Connection, requests: list[tuple[str, str, dict[str, int]]]) -> None:
        if via == "driver":
            driver.enqueue_many(cursor_of(connection), requests)
        else:
            queue.enqueue_many(connection, requests)

    first = _enqueue(database, "classify", "report-1", report_id=1)
    with database.begin() as connection:
        enqueue_many(
            connection,
            [
                ("classify", "report-1", {"report_id": 1}),  # already pending
                ("classify", "report-2", {"report_id": 2}),
                ("withdraw", "report-1", {"report_id": 1}),  # another kind: a job of its own
                ("classify", "report-2", {"report_id": 2}),  # repeated in the same call
                ("classify", "report-3", {"report_id": 3}),
            ],
        )
        enqueue_many(connection, [])
    with database.connect() as connection:
        rows = connection.execute(sa.select(jobs).order_by(jobs.c.id)).all()
    assert [(r.kind, r.key, r.payload, r.state, r.attempts) for r in rows] == [
        ("classify", "report-1", {"report_id": 1}, "pending", 0),
        ("classify", "report-2", {"report_id": 2}, "pending", 0),
        ("withdraw", "report-1", {"report_id": 1}, "pending", 0),
        ("classify", "report-3", {"report_id": 3}, "pending", 0),
    ]
    assert rows[0].id == first and rows[1].not_before.tzinfo is not None
    [job] = queue.claim(database, ["withdraw"], "a")
    with database.begin() as connection:
        queue.complete(connection, job)
        enqueue_many(connection, [("withdraw", "report-1", {"report_id": 1})])  # finished: queued again
    assert queue.depths(database)["withdraw"] == {"done": 1, "pending": 1}


def _rows_without_ids(database: Database, kind: str) -> list[dict[str, object]]:
    """The kind's job rows in id order, timestamps as offsets from the row's claim (they differ between runs)."""
    with database.connect() as connection:
        found = connection.execute(sa.select(jobs).where(jobs.c.kind == kind).order_by(jobs.c.id)).all()
    result = []
    for row in found:
        values = row._asdict()
        values.pop("id")
        values.pop("kind")
        for name in ("created_at", "not_before", "claimed_at", "lease_expires_at", "finished_at"):
            moment = values[name]
            assert moment is None or moment.utcoffset() == dt.timedelta(0)
            values[name] = None if moment is None else round((moment - row.created_at).total_seconds())
        result.append(values)
    return result


def test_driver_claim_and_complete_write_the_rows_sqlalchemy_writes(database: Database) -> None:
    # Claims of one kind, and of two kinds of which one has no jobs.
    # Completing in a transaction, and on a connection outside one (which the driver statement begins).
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    for kind in ("fast", "slow"):
        for n in range(4):
            _enqueue(database, kind, f"k{n}", n=n, text="é'%(x)s")
        with database.begin() as connection:
            queue.enqueue(connection, kind, "future", {"n": None}, not_before=later)
    fast = queue.claim(database, ["fast"], "w", limit=3, lease_seconds=30)
    slow = queue.claim(database, ["slow", "none"], "w", limit=3, lease_seconds=30)
    assert [(j.key, dict(j.payload), j.attempts, j.claimed_by) for j in fast] == [
        (j.key, dict(j.payload), j.attempts, j.claimed_by) for j in slow
    ]
    assert [j.key for j in fast] == ["k0", "k1", "k2"]
    [one_fast] = queue.claim(database, ["fast"], "w")
    [one_slow] = queue.claim(database, ["slow", "none"], "w")
    assert queue.claim(database, ["fast"], "w") == []
    with database.begin() as connection:
        for job in fast[:2] + [one_fast]:
            queue.complete(connection, job)
        queue.complete(connection, fast[0])  # twice: harmless
        queue.complete(connection, fast[2].id)  # unfenced
    with database.connect() as connection:
        for job in slow[:2] + [one_slow]:
            queue.complete(connection, job)
        queue.complete(connection, slow[0])
        queue.complete(connection, slow[2].id)
        connection.commit()
    assert _rows_without_ids(database, "fast") == _rows_without_ids(database, "slow")
    # A job taken back by another instance is fenced on both paths.
    _enqueue(database, "fast", "k9")
    _enqueue(database, "slow", "k9")
    [taken_fast] = queue.claim(database, ["fast"], "w")
    [taken_slow] = queue.claim(database, ["slow", "none"], "w")
    with database.begin() as connection:
        connection.execute(jobs.update().where(jobs.c.key == "k9").values(claimed_by="other"))
    with pytest.raises(queue.LeaseLost), database.begin() as connection:
        queue.complete(connection, taken_fast)
    with pytest.raises(queue.LeaseLost), database.connect() as connection:
        queue.complete(connection, taken_slow)
