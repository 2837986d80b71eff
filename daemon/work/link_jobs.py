"""Job handlers that link reports and studies and keep the sidecar index: "link", "study_stable", "withdraw".

- link (payload report_id; queued by the inference worker once the report has a prediction): link the
  report to its study (daemon/work/linking.py decides), or park it; label every linked stable study.
- study_stable (payload study_instance_uid; queued by DICOM intake when a study's quiet period ends):
  link the parked reports that match the study, label it; a study that was labelled and became stable
  again (more instances arrived) gets its labels written back again so that the new instances carry them.
- withdraw (payload report_id; queued by HL7 intake for a cancellation): retire the labels that came
  from the report and queue their retraction.

`recheck` is the scheduler's periodic pass over parked reports, and the expiry of reports and studies
that stay unmatched past `[linking] unmatched_after_hours` (an audit row each, and a visible state).
Jobs of one kind are handled in batches: the writes and completions of a batch commit in one
transaction; when one job fails, each is done again in a transaction of its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import Connection

from daemon.audit import trail
from daemon.config import LinkingConfig
from daemon.store import driver_cache, queue
from daemon.store.database import Database
from daemon.store.queue import Job
from daemon.store.schema import (
    patients,
    report_link_states,
    report_links,
    reports,
    studies,
    study_link_states,
)
from daemon.work import sidecar
from daemon.work.linking import ReportFacts, StudyFacts, decide_link, parse_dicom_date
from daemon.work.runner import BatchHandler, JobFailed

if TYPE_CHECKING:
    from daemon.app import Services

log = logging.getLogger("neurolabel.linking")

LINK = "link"
STUDY_STABLE = "study_stable"
WITHDRAW = "withdraw"

# report_link_states.state
PARKED = "parked"
LINKED = "linked"
UNMATCHED = "unmatched"
REPORT_WITHDRAWN = "withdrawn"
# study_link_states.state
WAITING = "waiting"

RECHECK_CHUNK = 200
# Jobs of one kind handled together (one transaction, one commit).
BATCH_SIZE = 32
_MODALITY_SEPARATORS = re.compile(r"[\\,/\s]+")
# Statements run per report, built once and run as driver statements (see daemon/work/sidecar.py).
_REPORT = sa.select(reports).where(reports.c.id == sa.bindparam("report_id"))
_STUDY_STATE = sa.select(study_link_states.c.state).where(study_link_states.c.study_instance_uid == sa.bindparam("uid"))
_UPDATE_REPORT_STATE = (
    report_link_states.update()
    .where(report_link_states.c.report_id == sa.bindparam("report"))
    .values(
        state=sa.bindparam("new_state"), checked_at=sa.bindparam("at"), changed_at=sa.bindparam("at"),
        reason=sa.bindparam("why"),
    )
)
_INSERT_LINK = report_links.insert()
_INSERT_REPORT_STATE = report_link_states.insert()
_INSERT_STUDY_STATE = study_link_states.insert().values(
    study_instance_uid=sa.bindparam("uid"), state=sa.bindparam("state"), changed_at=sa.bindparam("changed_at"),
    waiting_since=sa.bindparam("waiting_since"),
)
_UPDATE_STUDY_STATE = (
    study_link_states.update()
    .where(study_link_states.c.study_instance_uid == sa.bindparam("uid"))
    .values(state=sa.bindparam("state"), changed_at=sa.bindparam("changed_at"),
            waiting_since=sa.bindparam("waiting_since"))
)


def _candidates_statement(by_uid: bool, by_accession: bool, by_patient: bool) -> sa.Select[Any]:
    """Studies matching a report by the identifiers it has, each with whether another active report links it."""
    conditions = []
    if by_uid:
        conditions.append(studies.c.study_instance_uid == sa.bindparam("uid"))
    if by_accession:
        conditions.append(studies.c.accession_number == sa.bindparam("accession"))
    if by_patient:
        conditions.append(studies.c.patient_id == sa.bindparam("patient"))
    elsewhere = (
        sa.select(report_links.c.id)
        .join(reports, reports.c.id == report_links.c.report_id)
        .where(
            report_links.c.study_instance_uid == studies.c.study_instance_uid,
            reports.c.state == sidecar.REPORT_ACTIVE,
            reports.c.id != sa.bindparam("report_id"),
        )
        .exists()
    )
    return (
        sa.select(
            studies.c.study_instance_uid,
            studies.c.accession_number,
            studies.c.patient_id,
            studies.c.study_date,
            studies.c.modalities,
            studies.c.last_received_at,
            patients.c.issuer_of_patient_id,
            elsewhere.label("linked_elsewhere"),
        )
        .select_from(studies.outerjoin(patients, patients.c.id == studies.c.patient_ref))
        .where(sa.or_(*conditions))
    )


# candidate_studies' statement for each combination of (study UID, accession, patient id) a report has.
_CANDIDATES = {
    given: _candidates_statement(*given) for given in itertools.product((False, True), repeat=3) if any(given)
}

Queued = list[sidecar.WritebackQueued]
# One job's work inside the batch's transaction; audit rows and write-back jobs go to the batch's writes.
Work = Callable[[Connection, LinkingConfig, Job, dt.datetime, sidecar.BatchWrites], Queued]


def link_handlers(services: Services) -> dict[str, BatchHandler]:
    """{"link", "study_stable", "withdraw"} for the JobRunner: batches of jobs, one batch of each kind at a time."""
    database, settings, signal = services.database, services.config.linking, services.work_signal

    def handler(work: Work) -> BatchHandler:
        async def run(jobs: Sequence[Job]) -> Mapping[int, BaseException]:
            queued, errors = await asyncio.to_thread(run_jobs, database, settings, work, jobs)
            sidecar.notify_writebacks(signal, queued)
            return errors

        # run_jobs completes every job it reports no error for, in the transaction of its writes.
        return BatchHandler(run, batch_size=BATCH_SIZE, max_in_flight=1, completes_jobs=True)

    return {LINK: handler(link_job), STUDY_STABLE: handler(study_stable_job), WITHDRAW: handler(withdraw_job)}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def run_jobs(
    database: Database, settings: LinkingConfig, work: Work, jobs: Sequence[Job]
) -> tuple[Queued, dict[int, BaseException]]:
    """Every job's writes and completion in one transaction (one commit for the batch); if one of them
    fails, each job again in its own transaction, so that the others still commit."""
    now = utcnow()
    try:
        with database.begin() as connection:
            queued: Queued = []
            writes = sidecar.BatchWrites()
            for job in jobs:
                queued += work(connection, settings, job, now, writes)
                queue.complete(connection, job)
            writes.flush(connection)
        return queued, {}
    except Exception as exc:  # noqa: BLE001 - reported per job below
        if len(jobs) == 1:
            return [], {jobs[0].id: exc}
    queued, errors = [], {}
    for job in jobs:
        try:
            with database.begin() as connection:
                writes = sidecar.BatchWrites()
                done = work(connection, settings, job, now, writes)
                queue.complete(connection, job)
                writes.flush(connection)
            queued += done
        except Exception as exc:  # noqa: BLE001 - the runner retries or fails this job
            errors[job.id] = exc
    return queued, errors


def run_one(database: Database, settings: LinkingConfig, work: Work, job: Job) -> Queued:
    """One job in its own transaction; raises what the job raised."""
    queued, errors = run_jobs(database, settings, work, [job])
    if errors:
        raise errors[job.id]
    return queued


def run_link_job(database: Database, settings: LinkingConfig, job: Job) -> Queued:
    return run_one(database, settings, link_job, job)


def run_study_stable_job(database: Database, settings: LinkingConfig, job: Job) -> Queued:
    return run_one(database, settings, study_stable_job, job)


def run_withdraw_job(database: Database, settings: LinkingConfig, job: Job) -> Queued:
    return run_one(database, settings, withdraw_job, job)


# --- jobs ------------------------------------------------------------------------------


def link_job(
    connection: Connection, settings: LinkingConfig, job: Job, now: dt.datetime, writes: sidecar.BatchWrites
) -> Queued:
    report_id = _payload_int(job, "report_id")
    report = driver_cache.first(connection, _REPORT, {"report_id": report_id})
    if report is None:
        raise JobFailed(f"report {report_id} does not exist")
    if report.state != sidecar.REPORT_ACTIVE:
        return []
    return link_report(connection, report, settings, now, writes=writes)


def study_stable_job(
    connection: Connection, settings: LinkingConfig, job: Job, now: dt.datetime, writes: sidecar.BatchWrites
) -> Queued:
    uid = _payload_str(job, "study_instance_uid")
    study = sidecar.lock_study(connection, uid)
    if study is None:
        raise JobFailed(f"study {uid} is not in the index")
    if study.state != sidecar.STUDY_STABLE:
        return []  # more instances arrived since; the next quiet period queues study_stable again
    queued: Queued = []
    for report in waiting_reports_for(connection, study):
        queued += link_report(connection, report, settings, now, writes=writes)
    labelled = sidecar.label_study(connection, uid, now, writes=writes)
    if labelled is not None:
        queued.append(labelled)
    newly_labelled = any(item.study_instance_uid == uid for item in queued)
    if not newly_labelled and (current := sidecar.current_labels(connection, uid)) is not None:
        # Stable again after more instances: write the same labels into the new ones too.
        queued.append(sidecar.enqueue_writeback(connection, uid, current.id, cause=f"stable:{job.id}", writes=writes))
    set_study_state(connection, uid, LINKED if sidecar.has_active_links(connection, uid) else WAITING, now)
    return queued


def withdraw_job(
    connection: Connection, settings: LinkingConfig, job: Job, now: dt.datetime, writes: sidecar.BatchWrites
) -> Queued:
    report_id = _payload_int(job, "report_id")
    if connection.execute(sa.select(reports.c.id).where(reports.c.id == report_id)).first() is None:
        raise JobFailed(f"report {report_id} does not exist")
    queued = sidecar.withdraw_report_labels(connection, report_id, now)
    set_report_state(connection, report_id, REPORT_WITHDRAWN, now, reason="report withdrawn")
    return queued


# --- linking one report -----------------------------------------------------------------


def link_report(
    connection: Connection,
    report: sa.Row,
    settings: LinkingConfig,
    now: dt.datetime,
    *,
    writes: sidecar.BatchWrites | None = None,
) -> list[sidecar.WritebackQueued]:
    """Link an active report (or keep its links), label its stable studies; park it when nothing matches. Audit
    rows and write-back jobs go with the batch's `writes` when given."""
    uids = sidecar.linked_study_uids(connection, report.id)
    if not uids:
        facts = report_facts(report)
        inherited = sidecar.linked_study_uids(connection, report.supersedes_id) if report.supersedes_id else []
        decision = decide_link(facts, candidate_studies(connection, facts), settings, inherited)
        if not decision.linked:
            park_report(connection, report.id, decision.reason, now)
            return []
        for uid in decision.study_uids:
            driver_cache.execute(
                connection, _INSERT_LINK, {"report_id": report.id, "study_instance_uid": uid,
                                           "method": decision.method, "linked_at": now}
            )
            set_study_state(connection, uid, LINKED, now)
        set_report_state(connection, report.id, LINKED, now, reason=decision.reason)
        sidecar.audit(
            connection,
            writes,
            trail.AuditEvent(
                "linking.linked",
                trail.SUCCESS,
                identifiers={
                    "report_id": report.id,
                    "accession_number": report.accession_number,
                    "study_instance_uids": list(decision.study_uids),
                    "method": decision.method,
                },
            ),
        )
        # DEBUG: the runner logs each batch's reports at INFO; the audit row holds the studies and the method.
        log.debug("report %d linked to %s by %s", report.id, ", ".join(decision.study_uids), decision.method)
        uids = list(decision.study_uids)
    return [
        queued for uid in uids if (queued := sidecar.label_study(connection, uid, now, writes=writes)) is not None
    ]


def report_facts(report: sa.Row) -> ReportFacts:
    moment = report.observation_time or report.created_at
    return ReportFacts(
        id=report.id,
        study_instance_uid=report.study_instance_uid or None,
        accession_number=report.accession_number or None,
        patient_id=report.patient_id or None,
        issuer_of_patient_id=report.issuer_of_patient_id or None,
        report_date=moment.date() if moment else None,
        supersedes_id=report.supersedes_id,
    )


def candidate_studies(connection: Connection, facts: ReportFacts) -> list[StudyFacts]:
    """Every study that could match the report by UID, accession or patient."""
    given = (bool(facts.study_instance_uid), bool(facts.accession_number), bool(facts.patient_id))
    if not any(given):
        return []
    rows = driver_cache.rows(
        connection,
        _CANDIDATES[given],
        {"report_id": facts.id, "uid": facts.study_instance_uid, "accession": facts.accession_number,
         "patient": facts.patient_id},
    )
    return [
        StudyFacts(
            study_instance_uid=row.study_instance_uid,
            accession_number=row.accession_number or None,
            patient_id=row.patient_id or None,
            issuer_of_patient_id=row.issuer_of_patient_id or None,
            study_date=parse_dicom_date(row.study_date),
            modalities=tuple(m for m in _MODALITY_SEPARATORS.split(row.modalities or "") if m),
            last_received_at=row.last_received_at,
            linked_elsewhere=bool(row.linked_elsewhere),
        )
        for row in rows
    ]


def waiting_reports_for(connection: Connection, study: sa.Row) -> list[sa.Row]:
    """Parked or unmatched active reports that could match `study`."""
    conditions = [reports.c.study_instance_uid == study.study_instance_uid]
    if study.accession_number:
        conditions.append(reports.c.accession_number == study.accession_number)
    if study.patient_id:
        conditions.append(reports.c.patient_id == study.patient_id)
    return connection.execute(
        sa.select(reports)
        .join(report_link_states, report_link_states.c.report_id == reports.c.id)
        .where(
            report_link_states.c.state.in_((PARKED, UNMATCHED)),
            reports.c.state == sidecar.REPORT_ACTIVE,
            sa.or_(*conditions),
        )
        .order_by(reports.c.id)
    ).all()


# --- states -------------------------------------------------------------------------------


def park_report(connection: Connection, report_id: int, reason: str, now: dt.datetime) -> None:
    """Park (or keep parked: since when it waits is kept; an unmatched report stays unmatched)."""
    existing = connection.execute(
        sa.select(report_link_states.c.state).where(report_link_states.c.report_id == report_id)
    ).scalar()
    if existing is None:
        connection.execute(
            report_link_states.insert().values(
                report_id=report_id, state=PARKED, parked_at=now, checked_at=now, changed_at=now, reason=reason[:200]
            )
        )
        log.info("report %d parked: %s", report_id, reason)
    else:
        connection.execute(
            report_link_states.update()
            .where(report_link_states.c.report_id == report_id)
            .values(checked_at=now, reason=reason[:200])
        )


def set_report_state(connection: Connection, report_id: int, state: str, now: dt.datetime, *, reason: str) -> None:
    updated = driver_cache.execute(
        connection, _UPDATE_REPORT_STATE, {"report": report_id, "new_state": state, "at": now, "why": reason[:200]}
    )
    if not updated:
        driver_cache.execute(
            connection,
            _INSERT_REPORT_STATE,
            {"report_id": report_id, "state": state, "checked_at": now, "changed_at": now, "reason": reason[:200]},
        )


def set_study_state(connection: Connection, uid: str, state: str, now: dt.datetime) -> None:
    """Record a stable study's linking state; a study already waiting (or unmatched) keeps its state and since."""
    existing = driver_cache.scalar(connection, _STUDY_STATE, {"uid": uid})
    if existing == state or (state == WAITING and existing == UNMATCHED):
        return
    values = {"uid": uid, "state": state, "changed_at": now, "waiting_since": now if state == WAITING else None}
    if existing is None:
        connection.execute(_INSERT_STUDY_STATE, values)
    else:
        driver_cache.execute(connection, _UPDATE_STUDY_STATE, values)


# --- the scheduler's pass ------------------------------------------------------------------


@dataclass(frozen=True)
class RecheckSummary:
    checked: int
    linked: int
    reports_expired: int
    studies_expired: int
    parked: int
    unmatched: int
    queued: tuple[sidecar.WritebackQueued, ...] = ()


def recheck(database: Database, settings: LinkingConfig, now: dt.datetime | None = None) -> RecheckSummary:
    """Look again at every parked report; then report those (and waiting studies) past the expiry."""
    now = now or utcnow()
    checked = linked = 0
    queued: list[sidecar.WritebackQueued] = []
    after_id = 0
    while True:
        with database.begin() as connection:
            parked = connection.execute(
                sa.select(reports)
                .join(report_link_states, report_link_states.c.report_id == reports.c.id)
                .where(report_link_states.c.state == PARKED, reports.c.id > after_id)
                .order_by(reports.c.id)
                .limit(RECHECK_CHUNK)
            ).all()
            for report in parked:
                checked += 1
                if report.state != sidecar.REPORT_ACTIVE:
                    set_report_state(connection, report.id, report.state, now, reason=f"report {report.state}")
                    continue
                queued += link_report(connection, report, settings, now)
                linked += bool(sidecar.linked_study_uids(connection, report.id))
        if len(parked) < RECHECK_CHUNK:
            break
        after_id = parked[-1].id
    with database.begin() as connection:
        reports_expired = expire_reports(connection, settings, now)
        studies_expired = expire_studies(connection, settings, now)
        counts = dict(
            connection.execute(
                sa.select(report_link_states.c.state, sa.func.count()).group_by(report_link_states.c.state)
            ).all()
        )
    return RecheckSummary(
        checked=checked,
        linked=linked,
        reports_expired=reports_expired,
        studies_expired=studies_expired,
        parked=counts.get(PARKED, 0),
        unmatched=counts.get(UNMATCHED, 0),
        queued=tuple(queued),
    )


def expiry_cutoff(settings: LinkingConfig, now: dt.datetime) -> dt.datetime:
    return now - dt.timedelta(hours=settings.unmatched_after_hours)


def expire_reports(connection: Connection, settings: LinkingConfig, now: dt.datetime) -> int:
    rows = connection.execute(
        sa.select(report_link_states.c.report_id.label("key"), reports.c.accession_number, report_link_states.c.reason)
        .join(reports, reports.c.id == report_link_states.c.report_id)
        .where(report_link_states.c.state == PARKED, report_link_states.c.parked_at <= expiry_cutoff(settings, now))
    ).all()
    hours = settings.unmatched_after_hours
    for row in rows:
        _unmatched(connection, report_link_states.c.report_id, row.key, now, "linking.report_unmatched",
                   {"report_id": row.key, "accession_number": row.accession_number},
                   f"report {row.key}: no study after {hours:g} h: {row.reason}")
    return len(rows)


def expire_studies(connection: Connection, settings: LinkingConfig, now: dt.datetime) -> int:
    rows = connection.execute(
        sa.select(study_link_states.c.study_instance_uid.label("key"), studies.c.accession_number)
        .join(studies, studies.c.study_instance_uid == study_link_states.c.study_instance_uid)
        .where(study_link_states.c.state == WAITING, study_link_states.c.waiting_since <= expiry_cutoff(settings, now))
    ).all()
    hours = settings.unmatched_after_hours
    for row in rows:
        _unmatched(connection, study_link_states.c.study_instance_uid, row.key, now, "linking.study_unmatched",
                   {"study_instance_uid": row.key, "accession_number": row.accession_number},
                   f"study {row.key}: no report after {hours:g} h")
    return len(rows)


def _unmatched(
    connection: Connection, key: sa.Column, value: object, now: dt.datetime, kind: str,
    identifiers: dict[str, object], detail: str,
) -> None:
    """Turn one waiting report or study unmatched: its state row, an audit row, a log line."""
    connection.execute(key.table.update().where(key == value).values(state=UNMATCHED, changed_at=now))
    trail.record(connection, kind, trail.FAILURE, identifiers=identifiers, detail=detail)
    log.warning("unmatched: %s", detail)


# --- payloads ------------------------------------------------------------------------------


def _payload_int(job: Job, key: str) -> int:
    try:
        return int(job.payload[key])
    except (KeyError, TypeError, ValueError):
        raise JobFailed(f"{job.kind} payload needs an integer {key!r}, got {dict(job.payload)}") from None


def _payload_str(job: Job, key: str) -> str:
    value = job.payload.get(key)
    if not isinstance(value, str) or not value:
        raise JobFailed(f"{job.kind} payload needs {key!r}, got {dict(job.payload)}")
    return value


def parked_or_unmatched(database: Database) -> Sequence[sa.Row]:
    """Reports waiting for a study or reported unmatched, oldest first (for operators and tests)."""
    with database.connect() as connection:
        return connection.execute(
            sa.select(report_link_states)
            .where(report_link_states.c.state.in_((PARKED, UNMATCHED)))
            .order_by(report_link_states.c.parked_at)
        ).all()
