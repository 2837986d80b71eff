"""Fixtures for the work area: Services over a migrated database (SQLite and PostgreSQL), and condition waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from daemon.app import Services
from daemon.config import Config, with_overrides
from daemon.store.database import Database
from daemon.work.runner import BatchHandler, Handler, JobRunner
from daemon.work.wakeup import WorkSignal
from tests.conftest import make_test_config


def make_services(config: Config, database: Database) -> Services:
    return Services(
        config=config,
        database=database,
        work_signal=WorkSignal(asyncio.get_running_loop()),
        instance_name="test-instance",
        registry=CollectorRegistry(),
    )


@pytest.fixture
def work_config(tmp_path: Path, database_url: str) -> Config:
    """Fast retries, and the database of the `database` fixture."""
    config = make_test_config(tmp_path)
    return with_overrides(
        config,
        database={"url": database_url},
        workers={"retry_base_seconds": 0.05, "retry_max_seconds": 0.2, "max_attempts": 3, "concurrency": 3},
    )


@pytest.fixture
async def services(work_config: Config, database: Database) -> Services:
    return make_services(work_config, database)


async def wait_for(condition: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> object:
    """Evaluate `condition` (in a thread: it usually reads the database) until truthy or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running(
    services: Services, handlers: Mapping[str, Handler | BatchHandler], **options: str
) -> AsyncIterator[JobRunner]:
    """A started JobRunner, stopped (with a 5 s drain) on exit."""
    runner = JobRunner(services, handlers, **options)
    await runner.start()
    try:
        yield runner
    finally:
        await runner.stop(time.monotonic() + 5)
