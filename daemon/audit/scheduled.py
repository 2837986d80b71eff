"""Writing the audit report for a period: used by `neurolabel report` and the scheduler."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

from daemon.audit.report import Period, gather, write_report
from daemon.config import Config
from daemon.store.database import Database

log = logging.getLogger("neurolabel.audit")


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
    log.info("audit report written to %s (%d studies labelled)", written[0].parent, data.labelled_studies)
    return written
