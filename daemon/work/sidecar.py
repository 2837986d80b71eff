"""The sidecar index: one current labels row per study, the superseded ones kept; every change queues a write-back.

All functions work inside the caller's transaction. The study row is locked first (FOR UPDATE on
PostgreSQL; SQLite serialises writers anyway) so that a report being linked and its study becoming
stable, handled at the same moment by two workers, label the study exactly once.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from daemon.audit import trail
from daemon.store import driver_cache, queue
from daemon.store.schema import predictions, report_links, reports, studies, study_labels
from daemon.work.linking import WITHDRAWN, CurrentLabels, LabelSource, decide_labels
from daemon.work.wakeup import WorkSignal

log = logging.getLogger("neurolabel.labels")

WRITEBACK = "writeback"
STUDY_STABLE = "stable"
REPORT_ACTIVE = "active"


@dataclass(frozen=True)
class WritebackQueued:
    study_instance_uid: str
    study_label_id: int
    withdrawn: bool = False


@dataclass
class BatchWrites:
    """The audit events and queued jobs of one transaction that handles a batch of jobs (daemon/work/link_jobs.py),
    written at its end with one executemany each instead of a statement or two apiece (two audit rows and a
    write-back job a linked report). Nothing in the transaction reads them back before it commits."""

    events: list[trail.AuditEvent] = field(default_factory=list)
    jobs: list[tuple[str, str, Mapping[str, Any]]] = field(default_factory=list)

    def flush(self, connection: Connection) -> None:
        trail.record_many(connection, self.events)
        queue.enqueue_many(connection, self.jobs)
        self.events, self.jobs = [], []


def audit(connection: Connection, writes: BatchWrites | None, event: trail.AuditEvent) -> None:
    """Record `event` now, or with the batch's other writes when given them."""
    if writes is None:
        trail.record_many(connection, [event])
    else:
        writes.events.append(event)


# The statements run for every report and study, built once with bind parameters and run as driver statements
# (daemon/store/driver_cache.py: compiled once per pooled connection; SQLAlchemy's execution of a cached
# statement still cost ~0.1 ms of CPU each, a dozen a report).
_LOCK_STUDY = (
    sa.select(studies.c.study_instance_uid, studies.c.accession_number, studies.c.patient_id, studies.c.state)
    .where(studies.c.study_instance_uid == sa.bindparam("uid"))
    .with_for_update()
)
_CURRENT_LABELS = (
    sa.select(study_labels.c.id, study_labels.c.report_id, study_labels.c.prediction_id)
    .where(study_labels.c.study_instance_uid == sa.bindparam("uid"), study_labels.c.current.is_(True))
    .order_by(study_labels.c.id.desc())
)
_LABEL_SOURCES = (
    sa.select(reports.c.id, reports.c.created_at, sa.func.max(predictions.c.id).label("prediction_id"))
    .select_from(
        report_links.join(reports, reports.c.id == report_links.c.report_id).join(
            predictions, predictions.c.report_id == reports.c.id
        )
    )
    .where(report_links.c.study_instance_uid == sa.bindparam("uid"), reports.c.state == REPORT_ACTIVE)
    .group_by(reports.c.id, reports.c.created_at)
)
_PREDICTION = sa.select(predictions).where(predictions.c.id == sa.bindparam("prediction_id"))
_REPORT_ACCESSION = sa.select(reports.c.accession_number).where(reports.c.id == sa.bindparam("report_id"))
_LINKED_STUDIES = (
    sa.select(report_links.c.study_instance_uid)
    .where(report_links.c.report_id == sa.bindparam("report_id"))
    .order_by(report_links.c.study_instance_uid)
)

_ACTIVE_LINK = (
    sa.select(report_links.c.id)
    .join(reports, reports.c.id == report_links.c.report_id)
    .where(report_links.c.study_instance_uid == sa.bindparam("uid"), reports.c.state == REPORT_ACTIVE)
    .limit(1)
)


def lock_study(connection: Connection, study_instance_uid: str) -> sa.Row | None:
    """The study's row (uid, accession, patient id, state), locked until the transaction ends."""
    return driver_cache.first(connection, _LOCK_STUDY, {"uid": study_instance_uid})


def current_labels(connection: Connection, study_instance_uid: str) -> CurrentLabels | None:
    row = driver_cache.first(connection, _CURRENT_LABELS, {"uid": study_instance_uid})
    return CurrentLabels(row.id, row.report_id, row.prediction_id) if row else None


def label_sources(connection: Connection, study_instance_uid: str) -> list[LabelSource]:
    """Active reports linked to the study that have a prediction, each with its newest prediction."""
    rows = driver_cache.rows(connection, _LABEL_SOURCES, {"uid": study_instance_uid})
    return [LabelSource(row.id, row.prediction_id, row.created_at) for row in rows]


def label_study(
    connection: Connection, study_instance_uid: str, now: dt.datetime, *, writes: BatchWrites | None = None
) -> WritebackQueued | None:
    """Make the newest linked report's prediction the study's current labels, if the study is stable (its audit
    row and write-back job with the batch's `writes` when given)."""
    study = lock_study(connection, study_instance_uid)
    if study is None or study.state != STUDY_STABLE:
        return None
    current = current_labels(connection, study_instance_uid)
    change = decide_labels(current, label_sources(connection, study_instance_uid))
    if change is None:
        return None
    if change.retire is not None:
        retire(connection, change.retire.id, change.reason or "superseded", now)
    prediction = driver_cache.first(connection, _PREDICTION, {"prediction_id": change.source.prediction_id})
    if prediction is None:
        raise RuntimeError(f"prediction {change.source.prediction_id} does not exist")
    accession = study.accession_number or driver_cache.scalar(
        connection, _REPORT_ACCESSION, {"report_id": change.source.report_id}
    )
    label_id = driver_cache.insert(
        connection,
        study_labels,
        {
            "study_instance_uid": study_instance_uid,
            "accession_number": accession,
            "report_id": change.source.report_id,
            "prediction_id": prediction.id,
            "labels": prediction.labels,
            "probabilities": prediction.probabilities,
            "model": prediction.model,
            "labelled_at": now,
            "current": True,
        },
    )
    queued = enqueue_writeback(connection, study_instance_uid, label_id, writes=writes)
    audit(
        connection,
        writes,
        trail.AuditEvent(
            "labels.written",
            trail.SUCCESS,
            identifiers={
                "study_instance_uid": study_instance_uid,
                "accession_number": accession,
                "report_id": change.source.report_id,
                "study_label_id": label_id,
                "model": prediction.model,
            },
            detail=f"replaces labels {change.retire.id} ({change.reason})" if change.retire else None,
        ),
    )
    # DEBUG: a line per study cost ~1 % of the daemon's CPU; the "labels.written" audit row holds the same.
    log.debug(
        "labels %d for study %s from report %d (%s)%s",
        label_id, study_instance_uid, change.source.report_id, prediction.model,
        f", replacing {change.retire.id} ({change.reason})" if change.retire else "",
    )
    return queued


def retire(connection: Connection, label_id: int, reason: str, now: dt.datetime) -> None:
    connection.execute(
        study_labels.update()
        .where(study_labels.c.id == label_id)
        .values(current=False, superseded_at=now, superseded_reason=reason)
    )


def withdraw_report_labels(connection: Connection, report_id: int, now: dt.datetime) -> list[WritebackQueued]:
    """Retire the current labels that came from `report_id` and queue their retraction; another linked
    active report, if any, then labels the study."""
    rows = connection.execute(
        sa.select(study_labels.c.id, study_labels.c.study_instance_uid, study_labels.c.accession_number).where(
            study_labels.c.report_id == report_id, study_labels.c.current.is_(True)
        )
    ).all()
    queued: list[WritebackQueued] = []
    for row in rows:
        lock_study(connection, row.study_instance_uid)
        retire(connection, row.id, WITHDRAWN, now)
        queued.append(enqueue_writeback(connection, row.study_instance_uid, row.id, withdrawn=True))
        trail.record(
            connection,
            "labels.withdrawn",
            trail.SUCCESS,
            identifiers={
                "study_instance_uid": row.study_instance_uid,
                "accession_number": row.accession_number,
                "report_id": report_id,
                "study_label_id": row.id,
            },
        )
        log.info("labels %d of study %s withdrawn with report %d", row.id, row.study_instance_uid, report_id)
        replacement = label_study(connection, row.study_instance_uid, now)
        if replacement is not None:
            queued.append(replacement)
    return queued


def enqueue_writeback(
    connection: Connection,
    study_instance_uid: str,
    label_id: int,
    *,
    withdrawn: bool = False,
    cause: str = "",
    writes: BatchWrites | None = None,
) -> WritebackQueued:
    """Queue the write-back of a labels row (or of its withdrawal); with the batch's `writes` when given. `cause`
    makes the key unique when the same row must be written again (new instances arrived) while an earlier
    write-back may still run."""
    key = f"study:{study_instance_uid}:labels:{label_id}"
    payload: dict[str, object] = {"study_instance_uid": study_instance_uid, "study_label_id": label_id}
    if withdrawn:
        key += ":withdrawn"
        payload["withdrawn"] = True
    if cause:
        key += f":{cause}"
    if writes is None:
        queue.enqueue(connection, WRITEBACK, key, payload)
    else:
        writes.jobs.append((WRITEBACK, key, payload))
    return WritebackQueued(study_instance_uid, label_id, withdrawn)


def linked_study_uids(connection: Connection, report_id: int) -> list[str]:
    return [row[0] for row in driver_cache.rows(connection, _LINKED_STUDIES, {"report_id": report_id})]


def has_active_links(connection: Connection, study_instance_uid: str) -> bool:
    return driver_cache.first(connection, _ACTIVE_LINK, {"uid": study_instance_uid}) is not None


def notify_writebacks(signal: WorkSignal, queued: Sequence[WritebackQueued]) -> None:
    if queued:
        signal.notify(WRITEBACK)
