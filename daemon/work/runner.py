"""The job runner: claims jobs of the kinds it has handlers for and runs them with bounded concurrency.

A handler is `async def handler(job) -> None`. Returning normally completes the job (a handler that must
complete it atomically with its own writes calls `queue.complete` in its transaction as well; the runner's
second completion is harmless). Raising `Defer` gives the job back without counting an attempt (the
resource it needs is not there yet); raising `JobFailed` marks it failed at once (bad payload); any other
exception retries it with exponential backoff until `[workers] max_attempts`, then marks it failed
(`neurolabel jobs list` shows it, `neurolabel jobs retry` re-runs it).

A `BatchHandler` takes up to `batch_size` jobs of its kind at once (the inference worker) and returns the
per-job exceptions of the jobs that did not succeed.

The runner sleeps on `WorkSignal` until work of its kinds is notified, a slot frees, or the earliest
deferred job becomes due. On stop it drains: in-flight jobs get until the deadline; those still running
then are cancelled and their rows left `running`, which the next start puts back to pending.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa

from daemon.audit import trail
from daemon.audit.redact import error_summary
from daemon.store import queue
from daemon.store.queue import Job
from daemon.store.schema import jobs as jobs_table

if TYPE_CHECKING:
    from daemon.app import Health, Services

log = logging.getLogger("neurolabel.work")

AUDIT_JOB_FAILURE = "job.failure"
# Jobs enqueued by another instance sharing the database notify nobody here;
# an idle runner looks at the queue this often anyway.
IDLE_RECHECK_SECONDS = 60.0

Handler = Callable[[Job], Awaitable[None]]
# The claim loop's look at the queue before every claim, built once (not cache-keyed anew each time).
_DUE_KINDS = (
    sa.select(jobs_table.c.kind)
    .where(
        jobs_table.c.state == queue.PENDING,
        jobs_table.c.kind.in_(sa.bindparam("kinds", expanding=True)),
        jobs_table.c.not_before <= sa.bindparam("now"),
    )
    .distinct()
)


@dataclass(frozen=True)
class BatchHandler:
    """Handles up to `batch_size` jobs of one kind in one call; returns {job id: exception} for those that failed."""

    run: Callable[[Sequence[Job]], Awaitable[Mapping[int, BaseException]]]
    batch_size: int
    # Called once when the runner stops (e.g. to close a gRPC channel).
    close: Callable[[], Awaitable[None]] | None = None
    # Batches of this kind in flight at once (0: as many as free slots). While they run, new jobs queue up
    # and the next claim takes them together, so batches grow with the load instead of hogging every slot.
    max_in_flight: int = 0
    # True when the handler completes every job it returns no exception for in the transaction of its own
    # writes (queue.complete): the runner then skips completing them a second time (a transaction per batch).
    completes_jobs: bool = False


class Defer(Exception):
    """Give the job back for `seconds` without counting an attempt (e.g. Triton not ready)."""

    def __init__(self, seconds: float, reason: str = "") -> None:
        super().__init__(reason or f"deferred for {seconds:.1f} s")
        self.seconds = seconds


class JobFailed(Exception):
    """The job cannot succeed (unknown report, malformed payload): mark it failed without retrying."""


@dataclass(frozen=True)
class Outcome:
    state: str  # "done" | "deferred" | "retry" | "failed"
    detail: str = ""


class JobRunner:
    """Component "workers": one claim loop, up to `[workers] concurrency` jobs (or batches) in flight."""

    name = "workers"

    def __init__(
        self,
        services: Services,
        handlers: Mapping[str, Handler | BatchHandler],
        *,
        worker_name: str | None = None,
    ) -> None:
        if not handlers:
            raise ValueError("a job runner needs at least one handler")
        self._services = services
        self._settings = services.config.workers
        self._handlers = dict(handlers)
        self._kinds = tuple(sorted(self._handlers))
        self.worker_name = worker_name or services.instance_name
        self._wake_kind = f"_runner:{self.worker_name}:{id(self)}"
        self._in_flight: dict[asyncio.Task[None], tuple[Job, ...]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._rotation = itertools.count()
        self._jobs_total = services.metrics.jobs_finished
        self._job_seconds = services.metrics.job_seconds

    @property
    def kinds(self) -> tuple[str, ...]:
        return self._kinds

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self._loop_task = asyncio.create_task(self._claim_loop(), name="job-runner")
        log.info("workers for %s, concurrency %d", ", ".join(self._kinds), self._settings.concurrency)

    async def stop(self, deadline: float) -> None:
        self._stopping = True
        self._services.work_signal.notify(self._wake_kind)
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._in_flight:
            log.info("draining %d job(s) in flight", sum(len(j) for j in self._in_flight.values()))
            await asyncio.wait(list(self._in_flight), timeout=max(0.0, deadline - time.monotonic()))
        for task, jobs in list(self._in_flight.items()):
            task.cancel()
            log.warning(
                "left running at stop (pending again at next start): %s",
                ", ".join(f"job {job.id} {job.kind} {job.key}" for job in jobs),
            )
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        for handler in self._handlers.values():
            if isinstance(handler, BatchHandler) and handler.close is not None:
                try:
                    await handler.close()
                except Exception:
                    log.exception("closing the %s handler failed", handler)

    def health(self) -> Health:
        from daemon.app import Health

        task = self._loop_task
        if task is None or task.done():
            return Health(False, "claim loop not running")
        return Health(True, f"{len(self._in_flight)}/{self._settings.concurrency} busy; {', '.join(self._kinds)}")

    # --- claiming --------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        signal = self._services.work_signal
        while not self._stopping:
            try:
                claimed = await self._fill_slots()
            except Exception:
                log.exception("claiming jobs failed; trying again shortly")
                await signal.wait([self._wake_kind], timeout=self._settings.retry_base_seconds)
                continue
            if self._stopping:
                break
            if claimed:
                continue
            claimable = self._claimable_kinds()
            if not claimable:  # every slot busy, or every kind at its cap: wait for a job to finish
                await signal.wait([self._wake_kind], timeout=None)
                continue
            timeout = await asyncio.to_thread(self._seconds_until_due, claimable)
            await signal.wait([*claimable, self._wake_kind], timeout=timeout)

    def _claimable_kinds(self) -> list[str]:
        """Kinds a claim may start now: a slot is free and the kind is under its in-flight cap."""
        if len(self._in_flight) >= self._settings.concurrency:
            return []
        running = collections.Counter(jobs[0].kind for jobs in self._in_flight.values())
        return [
            kind
            for kind, handler in self._handlers.items()
            if not (isinstance(handler, BatchHandler) and handler.max_in_flight)
            or running[kind] < handler.max_in_flight
        ]

    async def _fill_slots(self) -> int:
        """Claim for every kind with due jobs, in turn, while slots are free; returns how many batches started."""
        claimable = self._claimable_kinds()
        if not claimable:
            return 0
        # A read first: the claims (write transactions) go only to kinds that have due jobs.
        due = await asyncio.to_thread(self._due_kinds, claimable)
        started = 0
        first = next(self._rotation) % len(self._kinds)
        for kind in self._kinds[first:] + self._kinds[:first]:
            if kind not in due:
                continue
            if self._stopping or kind not in self._claimable_kinds():
                continue
            handler = self._handlers[kind]
            limit = handler.batch_size if isinstance(handler, BatchHandler) else 1
            claimed = await asyncio.to_thread(
                functools.partial(
                    queue.claim,
                    self._services.database,
                    [kind],
                    self.worker_name,
                    limit,
                    lease_seconds=self._settings.lease_seconds,
                )
            )
            if claimed:
                task = asyncio.create_task(self._execute(kind, tuple(claimed)), name=f"job-{kind}-{claimed[0].id}")
                self._in_flight[task] = tuple(claimed)
                task.add_done_callback(self._finished)
                started += 1
        return started

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("job task crashed", exc_info=task.exception())
        self._services.work_signal.notify(self._wake_kind)

    def _due_kinds(self, kinds: Sequence[str]) -> set[str]:
        with self._services.database.connect() as connection:
            return set(connection.execute(_DUE_KINDS, {"kinds": list(kinds), "now": queue.utcnow()}).scalars())

    def _seconds_until_due(self, kinds: Sequence[str]) -> float:
        with self._services.database.connect() as connection:
            earliest = connection.execute(
                sa.select(sa.func.min(jobs_table.c.not_before)).where(
                    jobs_table.c.state == queue.PENDING, jobs_table.c.kind.in_(kinds)
                )
            ).scalar()
        if earliest is None:
            return IDLE_RECHECK_SECONDS
        if earliest.tzinfo is None:  # SQLite returns naive datetimes
            earliest = earliest.replace(tzinfo=dt.timezone.utc)
        return min(IDLE_RECHECK_SECONDS, max(0.0, (earliest - queue.utcnow()).total_seconds()))

    # --- running ---------------------------------------------------------------------

    async def _execute(self, kind: str, jobs: tuple[Job, ...]) -> None:
        handler = self._handlers[kind]
        started = time.perf_counter()
        errors: Mapping[int, BaseException]
        try:
            if isinstance(handler, BatchHandler):
                errors = await handler.run(jobs)
            else:
                await handler(jobs[0])
                errors = {}
        except Exception as exc:  # noqa: BLE001 - every failure becomes a retry, never a crash
            errors = {job.id: exc for job in jobs}
        elapsed = time.perf_counter() - started
        outcomes = {job.id: self._outcome(job, errors.get(job.id)) for job in jobs}
        # Bookkeeping is shielded: once the work is done, its outcome is recorded even during a forced stop.
        # Jobs the handler completed itself need none.
        completed = isinstance(handler, BatchHandler) and handler.completes_jobs
        bookkeeping = [job for job in jobs if job.id in errors] if completed else list(jobs)
        if bookkeeping:
            await asyncio.shield(asyncio.to_thread(self._record, bookkeeping, errors))
        self._job_seconds.labels(kind).observe(elapsed)
        done: list[Job] = []
        for job in jobs:
            outcome = outcomes[job.id]
            if outcome.state == "done":
                done.append(job)
                continue
            self._jobs_total.labels(kind, outcome.state).inc()
            level = logging.WARNING if outcome.state in ("retry", "failed") else logging.INFO
            log.log(
                level,
                "job %d %s %s attempt %d: %s%s in %.1f ms",
                job.id, kind, job.key, job.attempts, outcome.state,
                f" ({outcome.detail})" if outcome.detail else "", elapsed * 1000,
            )
        if done:
            # The jobs that succeeded: one counter step and one line for the batch (a line per job cost as much
            # CPU as a link job's own work); each handler logs what it did per report or study.
            self._jobs_total.labels(kind, "done").inc(len(done))
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "%d %s job(s) done in %.1f ms: %s", len(done), kind, elapsed * 1000,
                    ", ".join(f"{job.id} ({job.key}, attempt {job.attempts})" for job in done),
                )

    def _outcome(self, job: Job, error: BaseException | None) -> Outcome:
        if error is None:
            return Outcome("done")
        if isinstance(error, Defer):
            return Outcome("deferred", f"{error}")
        text = error_summary(error)  # for the log: never a database error's parameters (report text)
        if isinstance(error, JobFailed) or job.attempts >= self._settings.max_attempts:
            return Outcome("failed", text)
        delay = queue.backoff_seconds(job.attempts, self._settings.retry_base_seconds, self._settings.retry_max_seconds)
        return Outcome("retry", f"{text}; again in {delay:.0f} s")

    def _record(self, jobs: Sequence[Job], errors: Mapping[int, BaseException]) -> None:
        settings = self._settings
        with self._services.database.begin() as connection:
            for job in jobs:
                error = errors.get(job.id)
                # Bookkeeping goes through the claimed Job, fenced on its lease (issue 8, deployment helper):
                # a job whose lease passed (this instance stalled) and that another instance took over is
                # left to its new owner. The LeaseKeeper component renews leases under `worker_name` ==
                # the instance name; a runner given another worker_name must renew its own.
                if error is None:
                    try:
                        queue.complete(connection, job)
                    except queue.LeaseLost:
                        log.warning("job %d %s %s: lease lost, left to its new owner", job.id, job.kind, job.key)
                elif isinstance(error, queue.LeaseLost):
                    # One job of a batch lost: the batch's writes were rolled back. Those still ours go back to
                    # pending (no attempt counted); for the lost one this is a no-op.
                    queue.defer(connection, job, 0)
                elif isinstance(error, Defer):
                    queue.defer(connection, job, error.seconds)
                else:
                    retried = queue.retry_later(
                        connection,
                        job,
                        _error_text(error),
                        max_attempts=0 if isinstance(error, JobFailed) else settings.max_attempts,
                        base_seconds=settings.retry_base_seconds,
                        max_seconds=settings.retry_max_seconds,
                    )
                    trail.record(
                        connection,
                        AUDIT_JOB_FAILURE,
                        trail.FAILURE,
                        actor=self.worker_name,
                        identifiers={"job_id": job.id, "kind": job.kind, "key": job.key, "attempt": job.attempts,
                                     "retried": retried},
                        detail=error_summary(error),
                    )
        for kind in {job.kind for job in jobs if isinstance(errors.get(job.id), Defer)}:
            # A deferred job is due later; make the claim loop recompute its wait.
            self._services.work_signal.notify(kind)


def _error_text(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
