"""Component "scheduler": the periodic work, on APScheduler's AsyncIOScheduler.

- linking recheck, every `[linking] recheck_interval_seconds` (and once at start): parked reports are
  looked at again, and reports and studies unmatched past `[linking] unmatched_after_hours` are reported;
- stability safety net: studies whose quiet period passed without being marked stable (DICOM intake's
  `mark_due_studies`; its own timers and start-up recovery do this normally);
- the audit report, on the cron expression `[audit] report_schedule` (local time), for the period since
  the schedule's previous fire time;
- retention (daemon/ops/retention.py), on the cron expression `[retention] schedule`.

Blocking work runs in threads; each job runs at most once at a time and missed runs coalesce.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from daemon.config import ConfigError
from daemon.ops.cron import crontab_trigger
from daemon.ops.retention import run_retention
from daemon.work import sidecar
from daemon.work.component import optional_function
from daemon.work.link_jobs import RecheckSummary, recheck

if TYPE_CHECKING:
    from daemon.app import Health, Services

log = logging.getLogger("neurolabel.scheduler")

LINKING_RECHECK = "linking-recheck"
STABILITY_RECOVERY = "stability-recovery"
AUDIT_REPORT = "audit-report"
RETENTION = "retention"
# DICOM intake's safety net: mark_due_studies(database, quiet_seconds, work_signal) -> list of UIDs.
STABILITY_HOOK = ("daemon.dicom.stability", "mark_due_studies")
STABILITY_INTERVAL_SECONDS_MIN = 30.0


def audit_trigger(expression: str) -> CronTrigger:
    """The cron trigger of `[audit] report_schedule`; a malformed expression is a configuration error."""
    try:
        return crontab_trigger(expression)  # crontab's weekday numbers (APScheduler's own start at Monday)
    except ValueError as exc:
        raise ConfigError(f"audit.report_schedule: {expression!r} is not a valid cron expression ({exc})") from None


class Scheduler:
    name = "scheduler"

    def __init__(self, services: Services) -> None:
        self._services = services
        self._scheduler = AsyncIOScheduler()
        self._last_recheck: RecheckSummary | None = None
        config = services.config
        recheck_every = IntervalTrigger(seconds=config.linking.recheck_interval_seconds)
        self._add(LINKING_RECHECK, self.recheck_links, recheck_every, start_now=True)
        stability = optional_function(*STABILITY_HOOK)
        if stability is not None and config.dicom.enabled:
            quiet = config.dicom.stable_after_seconds
            every = IntervalTrigger(seconds=max(STABILITY_INTERVAL_SECONDS_MIN, quiet))
            check = self._in_thread(stability, services.database, quiet, services.work_signal)
            self._add(STABILITY_RECOVERY, check, every)
        self._audit_trigger = audit_trigger(config.audit.report_schedule)
        self._add(AUDIT_REPORT, self._in_thread(self._audit_report), self._audit_trigger)
        retention = crontab_trigger(config.retention.schedule)  # validated with the configuration
        self._add(RETENTION, self._in_thread(run_retention, config, services.database, services.metrics), retention)

    @property
    def job_ids(self) -> list[str]:
        return [job.id for job in self._scheduler.get_jobs()]

    def _add(
        self, job_id: str, function: Callable[[], Awaitable[None]], trigger: Any, *, start_now: bool = False
    ) -> None:
        self._scheduler.add_job(
            function,
            trigger,
            id=job_id,
            name=job_id,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
            **({"next_run_time": dt.datetime.now(dt.timezone.utc)} if start_now else {}),
        )

    def _in_thread(self, function: Callable[..., Any], *args: Any) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                await asyncio.to_thread(function, *args)
            except Exception:
                log.exception("scheduled %s failed", getattr(function, "__name__", function))

        return run

    async def start(self) -> None:
        self._scheduler.start()
        log.info("scheduled: %s", ", ".join(self.job_ids))

    async def stop(self, deadline: float) -> None:
        if self._scheduler.running:
            # AsyncIOScheduler shuts down on the loop's next turn; jobs running now are not waited for
            # (their work is in the database and they are idempotent).
            self._scheduler.shutdown(wait=False)
            while self._scheduler.running and time.monotonic() < deadline:
                await asyncio.sleep(0.01)

    def health(self) -> Health:
        from daemon.app import Health

        if not self._scheduler.running:
            return Health(False, "not running")
        summary = self._last_recheck
        if summary is None:
            return Health(True, "linking recheck pending")
        return Health(True, f"reports parked {summary.parked}, unmatched {summary.unmatched}")

    async def recheck_links(self) -> RecheckSummary | None:
        services = self._services
        try:
            summary = await asyncio.to_thread(recheck, services.database, services.config.linking)
        except Exception:
            log.exception("linking recheck failed")
            return None
        self._last_recheck = summary
        sidecar.notify_writebacks(services.work_signal, summary.queued)
        if summary.linked or summary.reports_expired or summary.studies_expired:
            log.info(
                "linking recheck: %d parked looked at, %d linked, %d reports and %d studies now unmatched",
                summary.checked, summary.linked, summary.reports_expired, summary.studies_expired,
            )
        return summary

    def _audit_report(self) -> None:
        from daemon.audit.scheduled import write_scheduled_report

        # The period since the schedule's previous fire time (yesterday 06:00 to today 06:00 by default).
        write_scheduled_report(self._services.config, self._services.database, self._audit_trigger)


def build_scheduler(services: Services) -> Scheduler:
    return Scheduler(services)
