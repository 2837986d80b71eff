"""Retention jobs: raw HL7 messages, forwarded files (through a real Orthanc) and audit rows, each run audited."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from daemon.app import Services
from daemon.audit import trail
from daemon.audit.file_sink import AuditFile
from daemon.config import Config, with_overrides
from daemon.hl7.intake import Received
from daemon.hl7.review import intake_for
from daemon.ops.metrics import StageMetrics
from daemon.ops.retention import run_retention
from daemon.store.database import Database
from daemon.store.schema import audit_events, hl7_messages, instances, jobs, reports, studies, study_labels
from daemon.work.writeback import FORWARD, WRITEBACK, writeback_handlers
from tests.hl7.messages import oru
from tests.peers.orthanc import OrthancServer, orthanc, orthanc_server  # noqa: F401  (fixtures)
from tests.work.conftest import make_services, running, wait_for, work_config  # noqa: F401  (fixture)
from tests.work.test_writeback import STUDY_UID, add_labels, store_study, writeback_payload

NOW = dt.datetime.now(dt.timezone.utc)


def audits(database: Database, kind: str) -> list[sa.Row]:
    with database.connect() as connection:
        return connection.execute(
            sa.select(audit_events).where(audit_events.c.kind == kind).order_by(audit_events.c.id)
        ).all()


def table(database: Database, which: sa.Table) -> list[sa.Row]:
    with database.connect() as connection:
        return connection.execute(sa.select(which).order_by(which.c.id)).all()


def retention(config: Config, **values: object) -> Config:
    return with_overrides(config, retention=values)


# --- raw HL7 -------------------------------------------------------------------------------------------


def test_old_raw_messages_are_emptied_and_old_rejected_ones_deleted(work_config: Config, database: Database) -> None:
    intake = intake_for(work_config, database)
    old, recent = NOW - dt.timedelta(days=40), NOW - dt.timedelta(days=2)
    intake.handle_batch([
        Received(oru("OLD1", accession="R1").encode(), "10.0.0.1:1", old),
        Received(oru("OLD1", accession="R1").encode(), "10.0.0.1:1", old),  # a resend: duplicate
        Received(b"MSH|^~\\&|RIS|H|NL|NL|2024||ADT^A01|BAD1|P|2.5\r", "10.0.0.1:1", old),  # rejected
        Received(oru("NEW1", accession="R2").encode(), "10.0.0.1:1", recent),
        Received(b"MSH|^~\\&|RIS|H|NL|NL|2024||ADT^A01|BAD2|P|2.5\r", "10.0.0.1:1", recent),
    ])
    registry = CollectorRegistry()
    metrics = StageMetrics.create(registry)
    summary = run_retention(retention(work_config, hl7_raw_days=30), database, metrics)
    assert (summary.hl7_emptied, summary.hl7_deleted, summary.errors) == (2, 1, ())
    by_control = {(row.control_id, row.status): row for row in table(database, hl7_messages)}
    assert set(by_control) == {("OLD1", "accepted"), ("OLD1", "duplicate"), ("NEW1", "accepted"), ("BAD2", "rejected")}
    assert bytes(by_control[("OLD1", "accepted")].raw) == b"" and by_control[("OLD1", "accepted")].size_bytes > 0
    assert bytes(by_control[("NEW1", "accepted")].raw).startswith(b"MSH")
    assert [row.accession_number for row in table(database, reports)] == ["R1", "R2"]  # parsed reports kept
    (audit,) = audits(database, "retention.hl7_raw")
    assert audit.outcome == "success" and audit.identifiers["raw_emptied"] == 2
    assert audit.identifiers["rejected_deleted"] == 1
    assert registry.get_sample_value("neurolabel_retention_removed_total", {"what": "hl7_raw"}) == 2
    again = run_retention(retention(work_config, hl7_raw_days=30), database)
    assert (again.hl7_emptied, again.hl7_deleted) == (0, 0)
    assert len(audits(database, "retention.hl7_raw")) == 2  # every run is audited


def test_nothing_is_removed_by_default(work_config: Config, database: Database) -> None:
    intake_for(work_config, database).handle_batch([Received(oru("K1").encode(), "p", NOW - dt.timedelta(days=9999))])
    summary = run_retention(work_config, database)
    assert (summary.hl7_emptied, summary.hl7_deleted, summary.files_deleted, summary.audit_deleted) == (0, 0, 0, 0)
    assert bytes(table(database, hl7_messages)[0].raw)
    assert not [row for row in table(database, audit_events) if row.kind.startswith("retention.")]


# --- audit rows ------------------------------------------------------------------------------------------


def test_old_audit_rows_go_only_once_they_are_in_the_audit_file(work_config: Config, database: Database) -> None:
    def add(count: int, days_ago: float) -> None:
        with database.begin() as connection:
            for _ in range(count):
                trail.record(connection, "test.event", trail.SUCCESS)
            connection.execute(
                audit_events.update().where(audit_events.c.kind == "test.event", audit_events.c.detail.is_(None))
                .values(at=NOW - dt.timedelta(days=days_ago), detail=f"{days_ago} days")
            )

    add(3, 100)
    add(2, 1)
    AuditFile(work_config.audit.log_file).copy_new_rows(database)  # the file holds these five
    add(4, 100)  # old, but not in the file yet
    summary = run_retention(retention(work_config, audit_days=30), database)
    assert summary.audit_deleted == 3
    left = [row.detail for row in table(database, audit_events) if row.kind == "test.event"]
    assert left == ["1 days"] * 2 + ["100 days"] * 4
    (audit,) = audits(database, "retention.audit")
    assert audit.identifiers["deleted"] == 3


# --- forwarded files ------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_files_of_a_study_forwarded_everywhere_are_removed(
    work_config: Config, database: Database, orthanc: OrthancServer  # noqa: F811
) -> None:
    config = with_overrides(work_config, writeback={"forward_to": (orthanc.address,)})
    services: Services = make_services(config, database)
    stored = store_study(config, database)
    label_id = add_labels(database)
    keep_waiting = retention(config, delete_forwarded_files=True, forwarded_files_after_hours=1.0)
    assert run_retention(keep_waiting, database).files_deleted == 0  # nothing forwarded yet

    from daemon.store import queue

    with database.begin() as connection:
        queue.enqueue(connection, WRITEBACK, f"study:{STUDY_UID}:labels:{label_id}", writeback_payload(label_id))

    def forwarded() -> bool:
        states = [row.state for row in table(database, jobs) if row.kind == FORWARD]
        return states == ["done"]

    async with running(services, writeback_handlers(services)):
        services.work_signal.notify(WRITEBACK)
        await wait_for(forwarded, timeout=60, what="forward job done")

    assert run_retention(keep_waiting, database).files_deleted == 0  # forwarded less than an hour ago
    files = [config.storage.path / row.path for row in table(database, instances)]
    assert len(files) == len(stored.paths) + 1 and all(path.exists() for path in files)  # the SR too

    summary = run_retention(retention(config, delete_forwarded_files=True, forwarded_files_after_hours=0.0), database)
    assert (summary.studies_cleared, summary.files_deleted) == (1, len(files)) and summary.bytes_freed > 0
    assert not any(path.exists() for path in files)
    assert table(database, instances) == []
    (study,) = table(database, studies)
    assert (study.study_instance_uid, study.instance_count, study.total_bytes) == (STUDY_UID, 0, 0)
    assert [row.id for row in table(database, study_labels) if row.current] == [label_id]  # the labels stay
    per_study, per_run = audits(database, "retention.files")[-2:]
    assert per_study.identifiers["study_instance_uid"] == STUDY_UID and per_study.identifiers["files"] == len(files)
    assert per_run.identifiers == {"studies": 1, "files": len(files), "bytes": summary.bytes_freed}


def test_a_study_with_an_instance_after_its_forward_keeps_its_files(work_config: Config, database: Database) -> None:
    config = with_overrides(work_config, writeback={"forward_to": ("PACS@127.0.0.1:104",)})
    stored = store_study(config, database)
    label_id = add_labels(database)
    forwarded_at = NOW - dt.timedelta(hours=5)
    with database.begin() as connection:
        connection.execute(jobs.insert().values(
            kind=FORWARD, key=f"PACS@127.0.0.1:104|{STUDY_UID}|{label_id}|labels", payload={}, state="done",
            attempts=1, not_before=forwarded_at, created_at=forwarded_at, finished_at=forwarded_at,
        ))
        connection.execute(studies.update().values(last_received_at=NOW - dt.timedelta(hours=1)))
    settings = retention(config, delete_forwarded_files=True, forwarded_files_after_hours=0.0)
    assert run_retention(settings, database).files_deleted == 0
    with database.begin() as connection:
        connection.execute(studies.update().values(last_received_at=forwarded_at - dt.timedelta(minutes=1)))
    assert run_retention(settings, database).files_deleted == len(stored.paths)
    assert not any(Path(path).exists() for path in stored.paths)
