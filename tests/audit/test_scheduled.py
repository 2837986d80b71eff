"""The scheduled audit report covers the period since the schedule's previous fire time."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from daemon.audit.scheduled import previous_period, write_scheduled_report
from daemon.config import Config
from daemon.ops.cron import crontab_trigger
from daemon.store.database import open_database
from daemon.store.migrate import upgrade_to_head
from daemon.store.schema import audit_events

UTC = dt.timezone.utc


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "now", "since", "until"),
    [
        ("0 6 * * *", "2026-11-26T06:00:00.004", "2026-11-25T06:00", "2026-11-26T06:00"),  # run on time
        ("0 6 * * *", "2026-11-26T09:30", "2026-11-25T06:00", "2026-11-26T06:00"),  # run late (coalesced)
        ("0 * * * *", "2026-11-26T10:00:01", "2026-11-26T09:00", "2026-11-26T10:00"),
        ("30 7 * * 1", "2026-11-30T07:30", "2026-11-23T07:30", "2026-11-30T07:30"),  # weekly, Mondays
        ("0 0 1 * *", "2026-12-01T00:00", "2026-11-01T00:00", "2026-12-01T00:00"),  # monthly
        ("*/15 * * * *", "2026-11-26T10:07", "2026-11-26T09:45", "2026-11-26T10:00"),
        ("0 0 1 1 *", "2026-11-26T10:00", "2025-01-01T00:00", "2026-01-01T00:00"),  # yearly
    ],
)
def test_previous_period(expression: str, now: str, since: str, until: str) -> None:
    trigger = crontab_trigger(expression, timezone=UTC)
    assert previous_period(trigger, at(now)) == (at(since), at(until))


def test_the_scheduled_run_writes_the_report_of_the_previous_period(test_config: Config) -> None:
    test_config.daemon.state_dir.mkdir(parents=True)
    database = open_database(test_config.database.url)
    upgrade_to_head(database)
    try:
        trigger = crontab_trigger("0 6 * * *", timezone=UTC)
        written = write_scheduled_report(test_config, database, trigger, now=at("2026-11-26T06:00:00.5"))
        with database.connect() as connection:
            (event,) = connection.execute(sa.select(audit_events).where(audit_events.c.kind == "audit.report")).all()
    finally:
        database.dispose()
    assert written[0].parent.name == "audit-20261125T0600-20261126T0600"
    assert event.identifiers["since"] == "2026-11-25T06:00:00+00:00" and event.identifiers["folder"].endswith(
        written[0].parent.name)
