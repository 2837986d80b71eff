"""The work queue: jobs are rows, claimed atomically, retried with backoff, recovered after a crash.

Several daemons may share one PostgreSQL database and its queue. A claimed job is leased to its claimer
(`claimed_by`, `lease_expires_at`); the owner renews its leases while it lives (daemon/store/leases.py) and
any instance puts jobs whose lease has passed back to pending. Bookkeeping on a claimed `Job` is fenced on
its owner: `complete` raises `LeaseLost` when the job has been taken back, so a handler that completes the
job in the transaction of its own writes never commits them for a job another instance now runs.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import Dialect

from daemon.store import driver_cache
from daemon.store.database import Database
from daemon.store.driver import DriverStatement
from daemon.store.schema import jobs

PENDING = "pending"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
ACTIVE = (PENDING, RUNNING)
# The predicate of the unique index uq_jobs_active_kind_key (daemon/store/schema.py), word for word.
ACTIVE_PREDICATE = "state IN ('pending', 'running')"

DEFAULT_LEASE_SECONDS = 60.0
# PostgreSQL LISTEN/NOTIFY channel on which enqueues wake the workers of every instance.
NOTIFY_CHANNEL = "neurolabel_jobs"


class LeaseLost(Exception):
    """The job is no longer ours (its lease expired and it was put back or claimed by another instance)."""


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    key: str
    payload: Mapping[str, Any]
    attempts: int
    # Who claimed it; bookkeeping through this Job is fenced on it. Empty: not fenced.
    claimed_by: str = ""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def enqueue(
    connection: Connection,
    kind: str,
    key: str,
    payload: Mapping[str, Any] | None = None,
    *,
    not_before: dt.datetime | None = None,
) -> int | None:
    """Add a job inside the caller's transaction; a no-op (None) if (kind, key) is already pending or running.

    The unique index on unfinished (kind, key) decides, so two instances enqueueing the same job at once
    get one row (the second waits for the first's transaction on PostgreSQL, then does nothing).
    """
    now = utcnow()
    values = dict(
        kind=kind,
        key=key,
        payload=dict(payload or {}),
        state=PENDING,
        attempts=0,
        not_before=not_before or now,
        created_at=now,
    )
    if connection.dialect.name == "sqlite":
        # Writers are serialised there (BEGIN IMMEDIATE), so look-then-insert cannot race, and both
        # statements stay in SQLAlchemy's compiled cache (an ON CONFLICT insert is compiled anew on
        # every call, which cost about half of the HL7 intake's CPU per message).
        if connection.execute(_ACTIVE_JOB, {"kind": kind, "key": key}).first() is not None:
            return None
        job_id = connection.execute(_INSERT_JOB, values).scalar()
    else:
        statement = _insert_unless_active(connection.dialect.name).values(**values).returning(jobs.c.id)
        job_id = connection.execute(statement).scalar()
    if job_id is None:
        return None
    announce(connection, kind)
    return int(job_id)


def enqueue_many(connection: Connection, requests: Sequence[tuple[str, str, Mapping[str, Any]]]) -> None:
    """`enqueue` for several (kind, key, payload) at once, in order, inside the caller's transaction; each one a
    no-op if its (kind, key) is already pending or running (or earlier in `requests`).

    On SQLite one executemany of `INSERT OR IGNORE`: the only unique constraints of `jobs` are its primary key
    (not given) and the active (kind, key) index, and every NOT NULL column is given, so "ignore" means
    exactly "already active". The group commit of HL7 intake queues its jobs this way (one statement a batch
    instead of two a job). Elsewhere each request goes through `enqueue`.
    """
    if not requests:
        return
    if connection.dialect.name != "sqlite":
        for kind, key, payload in requests:
            enqueue(connection, kind, key, payload)
        return
    connection.execute(_INSERT_JOB_UNLESS_ACTIVE, _job_rows(requests))


def _job_rows(requests: Sequence[tuple[str, str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """New pending job rows for (kind, key, payload) requests, all created now."""
    now = utcnow()
    return [
        dict(kind=kind, key=key, payload=dict(payload), state=PENDING, attempts=0, not_before=now, created_at=now)
        for kind, key, payload in requests
    ]


def _insert_unless_active(dialect_name: str) -> sa.Insert:
    """INSERT INTO jobs … ON CONFLICT on the active (kind, key) index DO NOTHING (PostgreSQL, SQLite ≥ 3.24)."""
    # The predicate must be literal: PostgreSQL cannot match a partial index against bound parameters
    # once psycopg prepares the statement (from its fifth execution on).
    return _dialect_insert(dialect_name)(jobs).on_conflict_do_nothing(
        index_elements=[jobs.c.kind, jobs.c.key], index_where=sa.text(ACTIVE_PREDICATE)
    )


@dataclass(frozen=True)
class DriverEnqueue:
    """`enqueue_many` compiled once for a dialect and run on the DBAPI cursor of the caller's transaction
    (daemon/store/driver.py): for HL7 intake, which queues a job for every message.

    The same rows as `enqueue`: on SQLite the `INSERT OR IGNORE` of `enqueue_many`; on PostgreSQL the
    `ON CONFLICT (kind, key) WHERE <active> DO NOTHING` of `enqueue`, as one executemany, followed by one
    `pg_notify` per kind queued (also when every job of that kind was already active: a spurious wake-up
    costs the workers one empty claim).
    """

    insert: DriverStatement
    notify: DriverStatement | None

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> DriverEnqueue:
        if dialect.name == "sqlite":
            statement: sa.Insert = _INSERT_JOB_UNLESS_ACTIVE
        else:
            statement = _insert_unless_active(dialect.name)
        notify = None
        if dialect.name == "postgresql":
            notify = DriverStatement.compile(
                sa.select(
                    sa.func.pg_notify(sa.bindparam("channel", type_=sa.String), sa.bindparam("kind", type_=sa.String))
                ),
                dialect,
            )
        return cls(DriverStatement.compile(statement, dialect, _JOB_KEYS), notify)

    def enqueue_many(self, cursor: Any, requests: Sequence[tuple[str, str, Mapping[str, Any]]]) -> None:
        """`enqueue_many(connection, requests)`, on `cursor` (from `driver.cursor_of(connection)`)."""
        if not requests:
            return
        self.insert.executemany(cursor, _job_rows(requests))
        if self.notify is not None:
            for kind in sorted({kind for kind, _key, _payload in requests}):
                self.notify.execute(cursor, {"channel": NOTIFY_CHANNEL, "kind": kind})


_JOB_KEYS = ("kind", "key", "payload", "state", "attempts", "not_before", "created_at")
_ACTIVE_JOB = (
    sa.select(jobs.c.id)
    .where(jobs.c.kind == sa.bindparam("kind"), jobs.c.key == sa.bindparam("key"), jobs.c.state.in_(ACTIVE))
    .limit(1)
)
_INSERT_JOB = sa.insert(jobs).returning(jobs.c.id)
_INSERT_JOB_UNLESS_ACTIVE = sa.insert(jobs).prefix_with("OR IGNORE", dialect="sqlite")


def announce(connection: Connection, kind: str) -> None:
    """On PostgreSQL, tell every instance (daemon/store/notify.py) that `kind` has work, when the caller commits."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_notify(:channel, :kind)"), {"channel": NOTIFY_CHANNEL, "kind": kind})


def _dialect_insert(dialect: str) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert


def claim(
    database: Database,
    kinds: Sequence[str],
    worker: str,
    limit: int = 1,
    *,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> list[Job]:
    """Atomically move up to `limit` due pending jobs of `kinds` to running, leased to `worker` for `lease_seconds`."""
    now = utcnow()
    expires = now + dt.timedelta(seconds=lease_seconds)
    if not kinds:
        return []
    with database.begin() as connection:
        # As driver statements (see `complete`): one parameter per kind and per job, not expanding lists.
        due = _due(len(kinds), locked=database.supports_skip_locked)
        found = driver_cache.rows(connection, due, {"now": now, "limit": limit, **_numbered("kind", kinds)})
        if not found:
            return []
        values = {"worker": worker, "now": now, "expires": expires, **_numbered("id", [row.id for row in found])}
        rows = driver_cache.rows(connection, _take(len(found)), values)
    return sorted((Job(r.id, r.kind, r.key, r.payload or {}, r.attempts, worker) for r in rows), key=lambda j: j.id)


# claim's statements, built once per number of kinds or ids (driver_cache compiles each once: it keys on the
# statement object).
@functools.lru_cache(maxsize=64)
def _due(kinds: int, *, locked: bool) -> sa.Select[Any]:
    """The ids of due pending jobs of the kinds :kind_0 … (`kinds` of them), oldest first, at most :limit; with
    `locked`, FOR UPDATE SKIP LOCKED."""
    due = (
        sa.select(jobs.c.id)
        .where(jobs.c.state == PENDING, jobs.c.kind.in_(_parameters("kind", kinds, jobs.c.kind.type)),
               jobs.c.not_before <= sa.bindparam("now"))
        .order_by(jobs.c.not_before, jobs.c.id)
        .limit(sa.bindparam("limit"))
    )
    return due.with_for_update(skip_locked=True) if locked else due


@functools.lru_cache(maxsize=256)
def _take(count: int) -> sa.Update:
    """Those of the jobs :id_0 … (`count` of them) still pending, now running and leased to :worker until :expires."""
    return (
        jobs.update()
        .where(jobs.c.id.in_(_parameters("id", count, jobs.c.id.type)), jobs.c.state == PENDING)
        .values(
            state=RUNNING,
            claimed_by=sa.bindparam("worker"),
            claimed_at=sa.bindparam("now"),
            lease_expires_at=sa.bindparam("expires"),
            attempts=jobs.c.attempts + 1,
        )
        .returning(jobs.c.id, jobs.c.kind, jobs.c.key, jobs.c.payload, jobs.c.attempts)
    )


def _parameters(name: str, count: int, type_: Any) -> list[sa.BindParameter[Any]]:
    return [sa.bindparam(f"{name}_{index}", type_=type_) for index in range(count)]


def _numbered(name: str, values: Sequence[Any]) -> dict[str, Any]:
    return {f"{name}_{index}": value for index, value in enumerate(values)}


def _job_id(job: Job | int) -> int:
    return job.id if isinstance(job, Job) else job


def _owned(job: Job | int, states: Sequence[str] = (RUNNING,)) -> sa.ColumnElement[bool]:
    """The row of `job`, and only while its claimer still holds it (when `job` is a claimed Job)."""
    if isinstance(job, Job) and job.claimed_by:
        return sa.and_(jobs.c.id == job.id, jobs.c.claimed_by == job.claimed_by, jobs.c.state.in_(states))
    return jobs.c.id == _job_id(job)


def complete(connection: Connection, job: Job | int) -> None:
    """Mark the job done in the caller's transaction. Given a claimed Job, raise LeaseLost if it is no longer ours.

    Completing twice (the handler in its own transaction, then the runner) is harmless.
    """
    # As driver statements on the transaction's DBAPI cursor (daemon/store/driver_cache.py): the same UPDATE,
    # without SQLAlchemy's per-execution work (~0.15 ms; three completions a report).
    if isinstance(job, Job) and job.claimed_by:
        owned = {"job_id": job.id, "owner": job.claimed_by, "done_at": utcnow()}
        if not driver_cache.execute(connection, _COMPLETE_OWNED, owned):
            raise LeaseLost(f"job {job.id} is no longer held by {job.claimed_by}")
        return
    driver_cache.execute(connection, _COMPLETE, {"job_id": _job_id(job), "done_at": utcnow()})


# complete's two statements, built once: SQLAlchemy then finds them in its compiled cache at once (a statement
# built per call costs its cache key, ~0.3 ms of CPU, on every job).
_COMPLETE = (
    jobs.update()
    .where(jobs.c.id == sa.bindparam("job_id"))
    .values(state=DONE, finished_at=sa.bindparam("done_at"), last_error=None, lease_expires_at=None)
)
# `state IN (running, done)` as two comparisons: driver statements take no expanding IN lists.
_COMPLETE_OWNED = _COMPLETE.where(
    jobs.c.claimed_by == sa.bindparam("owner"), sa.or_(jobs.c.state == RUNNING, jobs.c.state == DONE)
)


def retry_later(
    connection: Connection, job: Job, error: str, *, max_attempts: int, base_seconds: float, max_seconds: float
) -> bool:
    """Put a failed attempt back with exponential backoff; mark it failed after max_attempts. True if retried.

    A no-op (False) when the job is no longer ours: its new owner decides.
    """
    if job.attempts >= max_attempts:
        connection.execute(
            jobs.update()
            .where(_owned(job))
            .values(state=FAILED, last_error=error[:2000], finished_at=utcnow(), lease_expires_at=None)
        )
        return False
    delay = backoff_seconds(job.attempts, base_seconds, max_seconds)
    result = connection.execute(
        jobs.update()
        .where(_owned(job))
        .values(
            state=PENDING,
            last_error=error[:2000],
            not_before=utcnow() + dt.timedelta(seconds=delay),
            claimed_by=None,
            lease_expires_at=None,
        )
    )
    return bool(result.rowcount)


def defer(connection: Connection, job: Job | int, seconds: float, *, count_attempt: bool = False) -> None:
    """Give a claimed job back without counting it as a failure (e.g. Triton not ready yet); no-op if not ours."""
    values: dict[str, Any] = {
        "state": PENDING,
        "not_before": utcnow() + dt.timedelta(seconds=seconds),
        "claimed_by": None,
        "lease_expires_at": None,
    }
    if not count_attempt:
        values["attempts"] = jobs.c.attempts - 1
    connection.execute(jobs.update().where(_owned(job)).values(**values))


def backoff_seconds(attempt: int, base_seconds: float, max_seconds: float) -> float:
    return float(min(max_seconds, base_seconds * (2 ** max(0, attempt - 1))))


def recover_interrupted(database: Database, worker: str | None = None) -> int:
    """Put running jobs back to pending (all of them, or those of one worker). Returns how many.

    All of them is right only when no other instance shares the database (SQLite); see `recover_at_start`.
    """
    condition = jobs.c.state == RUNNING
    if worker is not None:
        condition = sa.and_(condition, jobs.c.claimed_by == worker)
    return sum(_requeue(database, condition).values())


def recover_expired(database: Database, now: dt.datetime | None = None) -> dict[str, int]:
    """Put running jobs whose lease has passed back to pending (their owner died). Returns {kind: count}."""
    moment = now or utcnow()
    return _requeue(
        database,
        sa.and_(
            jobs.c.state == RUNNING,
            sa.or_(jobs.c.lease_expires_at.is_(None), jobs.c.lease_expires_at < moment),
        ),
    )


def recover_at_start(database: Database, instance: str) -> int:
    """On start: with SQLite every running job was ours; with a shared server only our own name's and the expired."""
    if not database.supports_skip_locked:
        return recover_interrupted(database)
    return recover_interrupted(database, worker=instance) + sum(recover_expired(database).values())


def renew_leases(database: Database, worker: str, lease_seconds: float) -> int:
    """Extend the lease of every job `worker` is running; returns how many it holds."""
    with database.begin() as connection:
        result = connection.execute(
            jobs.update()
            .where(jobs.c.state == RUNNING, jobs.c.claimed_by == worker)
            .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds))
        )
    return int(result.rowcount or 0)


def _requeue(database: Database, condition: sa.ColumnElement[bool]) -> dict[str, int]:
    if database.supports_skip_locked:
        # Rows locked by a live transaction (a claim or completion in flight, or an instance frozen in one)
        # are skipped, not waited for: the next round takes them if they are still expired then.
        condition = jobs.c.id.in_(sa.select(jobs.c.id).where(condition).with_for_update(skip_locked=True))
    with database.begin() as connection:
        kinds = connection.execute(
            jobs.update()
            .where(condition)
            .values(state=PENDING, claimed_by=None, claimed_at=None, lease_expires_at=None, not_before=utcnow())
            .returning(jobs.c.kind)
        ).scalars().all()
        for kind in set(kinds):
            announce(connection, kind)
    counts: dict[str, int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def retry_failed(database: Database, job_ids: Sequence[int] | None = None) -> int:
    """Make failed jobs pending again (all, or the given ids).

    Per (kind, key) only the newest failed job is revived, and none where that job is pending or running again.
    """
    newer = jobs.alias("newer")
    condition = sa.and_(
        jobs.c.state == FAILED,
        ~sa.exists().where(
            newer.c.kind == jobs.c.kind,
            newer.c.key == jobs.c.key,
            sa.or_(newer.c.state.in_(ACTIVE), sa.and_(newer.c.state == FAILED, newer.c.id > jobs.c.id)),
        ),
    )
    if job_ids:
        condition = sa.and_(condition, jobs.c.id.in_(list(job_ids)))
    with database.begin() as connection:
        revived = list(connection.execute(sa.select(jobs.c.id).where(condition).order_by(jobs.c.id)).scalars())
        result = connection.execute(
            jobs.update().where(condition).values(state=PENDING, attempts=0, not_before=utcnow(), finished_at=None)
        )
        if revived:
            from daemon.audit import trail  # the trail sits above the store

            trail.record(connection, "reprocess.jobs", trail.SUCCESS, identifiers={"job_ids": revived[:1000]},
                         detail=f"{len(revived)} failed job(s) made pending again")
    return int(result.rowcount or 0)


def depths(database: Database) -> dict[str, dict[str, int]]:
    """{kind: {state: count}} for status and metrics."""
    with database.connect() as connection:
        rows = connection.execute(
            sa.select(jobs.c.kind, jobs.c.state, sa.func.count()).group_by(jobs.c.kind, jobs.c.state)
        ).all()
    result: dict[str, dict[str, int]] = {}
    for kind, state, count in rows:
        result.setdefault(kind, {})[state] = int(count)
    return result
