"""The job runner: each job claimed once, retries with backoff, failed jobs visible, recovery after a crash, drain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from daemon.app import Services, start_daemon, stop_daemon
from daemon.config import with_overrides
from daemon.store import queue
from daemon.store.queue import Job
from daemon.store.schema import jobs
from daemon.work.runner import IDLE_RECHECK_SECONDS, BatchHandler, Defer, JobFailed, JobRunner
from tests.work.conftest import running, wait_for


def enqueue_many(services: Services, kind: str, count: int, prefix: str = "k") -> list[int]:
    with services.database.begin() as connection:
        ids = [queue.enqueue(connection, kind, f"{prefix}{i}", {"n": i}) for i in range(count)]
    services.work_signal.notify(kind)
    return [i for i in ids if i is not None]


def job_rows(services: Services) -> dict[int, sa.Row]:
    with services.database.connect() as connection:
        return {row.id: row for row in connection.execute(sa.select(jobs))}


def all_in_state(services: Services, state: str, count: int) -> bool:
    rows = job_rows(services).values()
    return len(rows) == count and all(row.state == state for row in rows)


async def test_every_job_runs_exactly_once_across_two_runners(services: Services) -> None:
    seen: list[int] = []

    async def handler(job: Job) -> None:
        seen.append(job.id)
        await asyncio.sleep(0)

    async with running(services, {"echo": handler}, worker_name="one"):
        async with running(_with_registry(services), {"echo": handler}, worker_name="two"):
            enqueue_many(services, "echo", 40)
            await wait_for(lambda: all_in_state(services, "done", 40), what="40 jobs done")
    assert sorted(seen) == sorted(job_rows(services))
    assert {row.attempts for row in job_rows(services).values()} == {1}


async def test_a_failing_job_is_retried_with_backoff_then_succeeds(services: Services) -> None:
    attempts: list[float] = []

    async def flaky(job: Job) -> None:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise RuntimeError("peer not reachable")

    async with running(services, {"flaky": flaky}):
        enqueue_many(services, "flaky", 1)
        await wait_for(lambda: all_in_state(services, "done", 1), what="job done")
    (row,) = job_rows(services).values()
    assert row.attempts == 3
    assert row.last_error is None
    # base 0.05 s: the second retry waits 0.1 s, twice the first.
    assert attempts[2] - attempts[1] >= 0.09


async def test_a_job_failing_every_time_becomes_failed_and_can_be_retried(services: Services) -> None:
    broken = True

    async def handler(job: Job) -> None:
        if broken:
            raise RuntimeError("always broken")

    async with running(services, {"fragile": handler}):
        enqueue_many(services, "fragile", 1)
        await wait_for(lambda: all_in_state(services, "failed", 1), what="job failed")
        (row,) = job_rows(services).values()
        assert row.attempts == services.config.workers.max_attempts
        assert row.last_error == "RuntimeError: always broken"
        assert queue.depths(services.database) == {"fragile": {"failed": 1}}

        broken = False
        assert queue.retry_failed(services.database) == 1
        services.work_signal.notify("fragile")
        await wait_for(lambda: all_in_state(services, "done", 1), what="retried job done")


async def test_job_failed_is_not_retried(services: Services) -> None:
    async def handler(job: Job) -> None:
        raise JobFailed("report 7 does not exist")

    async with running(services, {"bad": handler}):
        enqueue_many(services, "bad", 1)
        await wait_for(lambda: all_in_state(services, "failed", 1), what="job failed")
    (row,) = job_rows(services).values()
    assert row.attempts == 1
    assert row.last_error == "JobFailed: report 7 does not exist"


async def test_a_deferred_job_costs_no_attempt_and_runs_when_due(services: Services) -> None:
    calls = 0

    async def handler(job: Job) -> None:
        nonlocal calls
        calls += 1
        if calls <= 4:
            raise Defer(0.05, "not ready")

    async with running(services, {"later": handler}):
        enqueue_many(services, "later", 1)
        await wait_for(lambda: all_in_state(services, "done", 1), what="deferred job done")
    (row,) = job_rows(services).values()
    assert calls == 5
    assert row.attempts == 1  # four deferrals cost nothing; max_attempts is 3


async def test_concurrency_is_bounded(services: Services) -> None:
    busy = 0
    peak = 0
    release = asyncio.Event()

    async def handler(job: Job) -> None:
        nonlocal busy, peak
        busy += 1
        peak = max(peak, busy)
        await release.wait()
        busy -= 1

    async with running(services, {"slow": handler}):
        enqueue_many(services, "slow", 8)
        await wait_for(lambda: busy == services.config.workers.concurrency, what="slots full")
        release.set()
        await wait_for(lambda: all_in_state(services, "done", 8), what="all done")
    assert peak == services.config.workers.concurrency == 3


async def test_batch_handler_gets_jobs_together_and_reports_failures_per_job(services: Services) -> None:
    batches: list[list[int]] = []

    async def run(batch: Sequence[Job]) -> Mapping[int, BaseException]:
        batches.append([job.payload["n"] for job in batch])
        return {job.id: JobFailed("odd") for job in batch if job.payload["n"] % 2}

    enqueue_many(services, "many", 10)
    async with running(services, {"many": BatchHandler(run, batch_size=4)}):
        await wait_for(lambda: sum(len(b) for b in batches) == 10, what="10 jobs handled")
        await wait_for(lambda: {r.state for r in job_rows(services).values()} == {"done", "failed"}, what="outcomes")
    assert [len(b) for b in batches] == [4, 4, 2]
    states = {row.payload["n"]: row.state for row in job_rows(services).values()}
    assert states == {n: "failed" if n % 2 else "done" for n in range(10)}


async def test_a_handler_that_completes_its_jobs_is_not_completed_again_but_its_failures_are_recorded(
    services: Services,
) -> None:
    handled: list[int] = []

    async def run(batch: Sequence[Job]) -> Mapping[int, BaseException]:
        # Completes the even jobs in its own transaction but "forgets" n == 0: the runner must not complete it.
        with services.database.begin() as connection:
            for job in batch:
                if job.payload["n"] % 2 == 0 and job.payload["n"] != 0:
                    queue.complete(connection, job)
        handled.extend(job.payload["n"] for job in batch)
        return {job.id: JobFailed("odd") for job in batch if job.payload["n"] % 2}

    enqueue_many(services, "own", 6)
    async with running(services, {"own": BatchHandler(run, batch_size=6, completes_jobs=True)}):
        await wait_for(lambda: len(handled) == 6, what="6 jobs handled")
        await wait_for(lambda: "failed" in {r.state for r in job_rows(services).values()}, what="failures recorded")
    states = {row.payload["n"]: row.state for row in job_rows(services).values()}
    assert states == {0: "running", 1: "failed", 2: "done", 3: "failed", 4: "done", 5: "failed"}


async def test_a_capped_batch_kind_leaves_the_other_slots_to_other_kinds(services: Services) -> None:
    release = asyncio.Event()
    batches: list[int] = []
    quick: list[int] = []

    async def run(batch: Sequence[Job]) -> Mapping[int, BaseException]:
        batches.append(len(batch))
        await release.wait()
        return {}

    async def small(job: Job) -> None:
        quick.append(job.id)

    handlers = {"big": BatchHandler(run, batch_size=2, max_in_flight=1), "small": small}
    async with running(services, handlers):
        enqueue_many(services, "big", 1)
        await wait_for(lambda: batches == [1], what="first batch running")
        enqueue_many(services, "big", 5, prefix="more")
        enqueue_many(services, "small", 3)
        await wait_for(lambda: len(quick) == 3, what="the other kind's jobs")
        assert batches == [1]  # at its cap while the first batch runs: the others wait, together
        release.set()
        await wait_for(lambda: all_in_state(services, "done", 9), what="all done")
    assert batches == [1, 2, 2, 1]


async def test_an_idle_runner_is_woken_by_the_signal_not_by_polling(services: Services) -> None:
    done = asyncio.Event()

    async def handler(job: Job) -> None:
        done.set()

    async with running(services, {"wake": handler}):
        await asyncio.sleep(0.1)  # let the runner go idle (waiting up to IDLE_RECHECK_SECONDS)
        started = time.monotonic()
        enqueue_many(services, "wake", 1)
        await asyncio.wait_for(done.wait(), timeout=5)
        assert time.monotonic() - started < min(2.0, IDLE_RECHECK_SECONDS)


async def test_stop_drains_jobs_in_flight_until_the_deadline(services: Services) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def handler(job: Job) -> None:
        started.set()
        await release.wait()

    runner = JobRunner(services, {"drain": handler})
    await runner.start()
    enqueue_many(services, "drain", 1)
    await asyncio.wait_for(started.wait(), timeout=5)
    stopping = asyncio.create_task(runner.stop(time.monotonic() + 10))
    await asyncio.sleep(0.05)
    assert not stopping.done()  # waiting for the job in flight
    release.set()
    await asyncio.wait_for(stopping, timeout=5)
    assert all_in_state(services, "done", 1)


async def test_a_job_still_running_at_the_deadline_is_recovered_at_next_start(services: Services) -> None:
    started = asyncio.Event()
    ran_again = asyncio.Event()

    async def stuck(job: Job) -> None:
        started.set()
        await asyncio.Event().wait()

    runner = JobRunner(services, {"stuck": stuck})
    await runner.start()
    enqueue_many(services, "stuck", 1)
    await asyncio.wait_for(started.wait(), timeout=5)
    await runner.stop(time.monotonic() + 0.1)
    assert all_in_state(services, "running", 1)  # left as it was, like a crash

    async def healthy(job: Job) -> None:
        ran_again.set()

    # The same instance restarting: on PostgreSQL, start recovers only its own name's jobs and expired
    # leases (other instances may be running theirs); on SQLite every running job (issue 8).
    config = with_overrides(services.config, daemon={"instance_name": services.instance_name})
    daemon = await start_daemon(config, [lambda s: JobRunner(s, {"stuck": healthy})])
    try:
        await asyncio.wait_for(ran_again.wait(), timeout=10)
        await wait_for(lambda: all_in_state(services, "done", 1), what="recovered job done")
    finally:
        await stop_daemon(daemon, drain_seconds=5)
    (row,) = job_rows(services).values()
    assert row.attempts == 2


def _with_registry(services: Services) -> Services:
    """A second runner in the same process needs its own metrics registry."""
    from dataclasses import replace

    from prometheus_client import CollectorRegistry

    return replace(services, registry=CollectorRegistry())
