"""The scheduler: its periodic jobs, the linking recheck on a schedule, the audit report's cron slot."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from apscheduler.triggers.cron import CronTrigger

from daemon.app import Services
from daemon.config import ConfigError, with_overrides
from daemon.work.link_jobs import LINK, run_link_job
from daemon.work.scheduler import (
    AUDIT_REPORT,
    LINKING_RECHECK,
    RETENTION,
    STABILITY_RECOVERY,
    Scheduler,
    audit_trigger,
)
from tests.work.conftest import make_services, wait_for
from tests.work.rows import add_prediction, add_report, add_study, claim_one, label_rows


def test_the_audit_schedule_is_a_cron_expression() -> None:
    trigger = audit_trigger("30 6 * * 1-5")
    assert isinstance(trigger, CronTrigger)
    monday = dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.timezone.utc)
    fire = trigger.get_next_fire_time(None, monday.astimezone(trigger.timezone))
    assert (fire.hour, fire.minute, fire.weekday()) == (6, 30, 1)
    with pytest.raises(ConfigError, match="audit.report_schedule"):
        audit_trigger("61 * * * *")


async def test_jobs_registered(services: Services) -> None:
    scheduler = Scheduler(services)
    assert set(scheduler.job_ids) == {LINKING_RECHECK, AUDIT_REPORT, RETENTION}  # [dicom] off: no stability check
    with_dicom = make_services(with_overrides(services.config, dicom={"enabled": True}), services.database)
    assert STABILITY_RECOVERY in Scheduler(with_dicom).job_ids


async def test_parked_reports_are_looked_at_again_on_schedule(services: Services) -> None:
    fast = make_services(with_overrides(services.config, linking={"recheck_interval_seconds": 0.2}), services.database)
    report_id = add_report(services.database, accession="ACC1")
    add_prediction(services.database, report_id)
    run_link_job(services.database, services.config.linking,
                 claim_one(services.database, LINK, f"report:{report_id}", {"report_id": report_id}))
    scheduler = Scheduler(fast)
    await scheduler.start()
    try:
        await wait_for(lambda: scheduler.health().detail == "reports parked 1, unmatched 0", what="first recheck")
        add_study(services.database, "1.2.3", accession="ACC1")  # its study_stable job went astray
        await wait_for(lambda: label_rows(services.database), what="labelled by a later recheck")
    finally:
        await scheduler.stop(time.monotonic() + 5)
    assert not scheduler.health().up


async def test_the_audit_report_job_writes_the_report(services: Services) -> None:
    scheduler = Scheduler(services)
    job = scheduler._scheduler.get_job(AUDIT_REPORT)
    await job.func()
    assert any(services.config.audit.report_dir.iterdir())
