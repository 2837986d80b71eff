"""The work queue: jobs are rows, claimed atomically, retried with backoff, recovered after a crash."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from daemon.store.database import Database
from daemon.store.schema import jobs

PENDING = "pending"
RUNNING = "running"
DONE = "done"
FAILED = "failed"


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    key: str
    payload: Mapping[str, Any]
    attempts: int


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
    """Add a job inside the caller's transaction; a no-op (None) if (kind, key) is already pending or running."""
    existing = connection.execute(
        sa.select(jobs.c.id).where(jobs.c.kind == kind, jobs.c.key == key, jobs.c.state.in_((PENDING, RUNNING)))
    ).first()
    if existing is not None:
        return None
    now = utcnow()
    result = connection.execute(
        jobs.insert().values(
            kind=kind,
            key=key,
            payload=dict(payload or {}),
            state=PENDING,
            attempts=0,
            not_before=not_before or now,
            created_at=now,
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def claim(database: Database, kinds: Sequence[str], worker: str, limit: int = 1) -> list[Job]:
    """Atomically move up to `limit` due pending jobs of `kinds` to running, owned by `worker`."""
    now = utcnow()
    due = (
        sa.select(jobs.c.id)
        .where(jobs.c.state == PENDING, jobs.c.kind.in_(kinds), jobs.c.not_before <= now)
        .order_by(jobs.c.not_before, jobs.c.id)
        .limit(limit)
    )
    if database.supports_skip_locked:
        due = due.with_for_update(skip_locked=True)
    with database.begin() as connection:
        ids = [row.id for row in connection.execute(due)]
        if not ids:
            return []
        rows = connection.execute(
            jobs.update()
            .where(jobs.c.id.in_(ids), jobs.c.state == PENDING)
            .values(state=RUNNING, claimed_by=worker, claimed_at=now, attempts=jobs.c.attempts + 1)
            .returning(jobs.c.id, jobs.c.kind, jobs.c.key, jobs.c.payload, jobs.c.attempts)
        ).all()
    return sorted((Job(r.id, r.kind, r.key, r.payload or {}, r.attempts) for r in rows), key=lambda j: j.id)


def complete(connection: Connection, job_id: int) -> None:
    connection.execute(
        jobs.update().where(jobs.c.id == job_id).values(state=DONE, finished_at=utcnow(), last_error=None)
    )


def retry_later(
    connection: Connection, job: Job, error: str, *, max_attempts: int, base_seconds: float, max_seconds: float
) -> bool:
    """Put a failed attempt back with exponential backoff; mark it failed after max_attempts. True if retried."""
    if job.attempts >= max_attempts:
        connection.execute(
            jobs.update()
            .where(jobs.c.id == job.id)
            .values(state=FAILED, last_error=error[:2000], finished_at=utcnow())
        )
        return False
    delay = backoff_seconds(job.attempts, base_seconds, max_seconds)
    connection.execute(
        jobs.update()
        .where(jobs.c.id == job.id)
        .values(state=PENDING, last_error=error[:2000], not_before=utcnow() + dt.timedelta(seconds=delay))
    )
    return True


def defer(connection: Connection, job_id: int, seconds: float, *, count_attempt: bool = False) -> None:
    """Give a claimed job back without counting it as a failure (e.g. Triton not ready yet)."""
    values: dict[str, Any] = {"state": PENDING, "not_before": utcnow() + dt.timedelta(seconds=seconds)}
    if not count_attempt:
        values["attempts"] = jobs.c.attempts - 1
    connection.execute(jobs.update().where(jobs.c.id == job_id).values(**values))


def backoff_seconds(attempt: int, base_seconds: float, max_seconds: float) -> float:
    return float(min(max_seconds, base_seconds * (2 ** max(0, attempt - 1))))


def recover_interrupted(database: Database, worker: str | None = None) -> int:
    """Put running jobs back to pending (all of them, or those of one worker). Returns how many."""
    condition = jobs.c.state == RUNNING
    if worker is not None:
        condition = sa.and_(condition, jobs.c.claimed_by == worker)
    with database.begin() as connection:
        result = connection.execute(
            jobs.update().where(condition).values(state=PENDING, claimed_by=None, claimed_at=None, not_before=utcnow())
        )
    return int(result.rowcount or 0)


def retry_failed(database: Database, job_ids: Sequence[int] | None = None) -> int:
    """Make failed jobs pending again (all, or the given ids)."""
    condition = jobs.c.state == FAILED
    if job_ids:
        condition = sa.and_(condition, jobs.c.id.in_(list(job_ids)))
    with database.begin() as connection:
        result = connection.execute(
            jobs.update().where(condition).values(state=PENDING, attempts=0, not_before=utcnow(), finished_at=None)
        )
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
