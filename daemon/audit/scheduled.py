"""Writing the audit report for a period: used by `neurolabel report` and the scheduler."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from apscheduler.triggers.base import BaseTrigger

from daemon.audit import trail
from daemon.audit.report import Period, gather, write_report
from daemon.config import Config
from daemon.store.database import Database

log = logging.getLogger("neurolabel.audit")

AUDIT_REPORT = "audit.report"


def reference_prevalence(config: Config) -> dict[str, float]:
    """The model card's reference prevalence, shipped in the model's metadata, if any."""
    from daemon.inference.metadata import ModelMetadata, latest_version_dir

    try:
        metadata = ModelMetadata.load(latest_version_dir(config.triton.model_repository / config.triton.model))
    except ValueError:
        return {}
    values = metadata.training.get("reference_prevalence", {})
    return {str(k): float(v) for k, v in values.items()} if isinstance(values, dict) else {}


def write_audit_report(
    config: Config, database: Database, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> list[Path]:
    """Gather and write the report for [since, until) (default: the 24 hours before now)."""
    until = until or dt.datetime.now(dt.timezone.utc)
    since = since or until - dt.timedelta(days=1)
    period = Period(since.astimezone(dt.timezone.utc), until.astimezone(dt.timezone.utc))
    data = gather(
        database,
        period,
        reference_prevalence=reference_prevalence(config),
        unmatched_after=dt.timedelta(hours=config.linking.unmatched_after_hours),
    )
    written = write_report(data, config.audit.report_dir)
    with database.begin() as connection:
        trail.record(
            connection,
            AUDIT_REPORT,
            trail.SUCCESS,
            identifiers={"folder": str(written[0].parent), "since": period.since.isoformat(),
                         "until": period.until.isoformat(), "labelled_studies": data.labelled_studies,
                         "drift": [flag.label for flag in data.drift]},
        )
    log.info("audit report written to %s (%d studies labelled)", written[0].parent, data.labelled_studies)
    return written


# Windows searched, in turn, for the two fire times before now (a crontab schedule fires at least yearly).
_SEARCH_WINDOWS = (dt.timedelta(hours=3), dt.timedelta(days=3), dt.timedelta(days=35), dt.timedelta(days=800))


def previous_period(trigger: BaseTrigger, now: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
    """[the fire time before the latest, the latest fire time at or before `now`) of a cron trigger.

    The scheduled report run at 06:00 by "0 6 * * *" covers yesterday 06:00 to today 06:00; hourly,
    the hour before; weekly, the week before. None if the trigger did not fire twice in two years.
    """
    for window in _SEARCH_WINDOWS:
        times: list[dt.datetime] = []
        moment = trigger.get_next_fire_time(None, now - window)
        while moment is not None and moment <= now:
            times.append(moment)
            moment = trigger.get_next_fire_time(moment, moment + dt.timedelta(microseconds=1))
        if len(times) >= 2:
            return times[-2], times[-1]
    return None


def write_scheduled_report(
    config: Config, database: Database, trigger: BaseTrigger, now: dt.datetime | None = None
) -> list[Path]:
    """The scheduler's run: the report for the period since the schedule's previous fire time."""
    now = now or dt.datetime.now(dt.timezone.utc)
    period = previous_period(trigger, now)
    since, until = period if period is not None else (None, now)
    return write_audit_report(config, database, since, until)
