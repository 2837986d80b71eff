"""Audit events of the components that the whole-daemon story (test_story.py) does not provoke: configuration
load, failed and retried jobs, reprocessed HL7 messages, and the ACK events written after the fact."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from daemon.app import Services, start_daemon, stop_daemon
from daemon.audit.config_load import effective_digest, file_digest
from daemon.audit.pending import PendingAudit
from daemon.audit.redact import error_summary
from daemon.audit.trail import AuditEvent
from daemon.config import Config, load_config, with_overrides
from daemon.hl7.intake import Received
from daemon.hl7.review import intake_for, reprocess
from daemon.store import queue
from daemon.store.database import Database
from daemon.store.schema import audit_events
from daemon.work.runner import JobFailed
from tests.hl7.messages import oru
from tests.work.conftest import make_services, running, wait_for, work_config  # noqa: F401  (fixture)


def events(database: Database, kind: str) -> list[sa.Row]:
    with database.connect() as connection:
        return connection.execute(
            sa.select(audit_events).where(audit_events.c.kind == kind).order_by(audit_events.c.id)
        ).all()


async def test_the_daemon_audits_the_configuration_it_loaded(tmp_path: Path, test_config: Config) -> None:
    path = tmp_path / "neurolabel.toml"
    text = (
        f'[daemon]\nstate_dir = "{test_config.daemon.state_dir}"\n[database]\nurl = "{test_config.database.url}"\n'
        '[hl7]\nenabled = false\n[dicom]\nenabled = false\n[triton]\nenabled = false\n[metrics]\nenabled = false\n'
        f'[audit]\nlog_file = "{test_config.audit.log_file}"\n'
    )
    path.write_text(text)
    config = load_config(path)
    daemon = await start_daemon(config)
    try:
        (event,) = events(daemon.services.database, "config.load")
    finally:
        await stop_daemon(daemon, drain_seconds=5)
    assert event.actor == daemon.services.instance_name and event.outcome == "success"
    assert event.identifiers["path"] == str(path.resolve())
    assert event.identifiers["sha256"] == file_digest(path) and len(event.identifiers["sha256"]) == 64
    assert event.identifiers["effective_sha256"] == effective_digest(config)
    assert effective_digest(with_overrides(config, linking={"fallback": "none"})) != effective_digest(config)


async def test_failed_attempts_are_audited_without_the_error_parameters(
    work_config: Config, database: Database  # noqa: F811
) -> None:
    services: Services = make_services(work_config, database)

    async def handler(job: queue.Job) -> None:
        if job.key == "bad":
            raise JobFailed("payload is unusable")
        with database.begin() as connection:  # a database error carries its statement's parameters
            connection.execute(sa.text("INSERT INTO no_such_table VALUES (:secret)"), {"secret": "Doe^Jane"})

    with database.begin() as connection:
        queue.enqueue(connection, "test", "bad", {})
        queue.enqueue(connection, "test", "flaky", {})
    async with running(services, {"test": handler}):
        services.work_signal.notify("test")
        await wait_for(lambda: len(events(database, "job.failure")) == 1 + work_config.workers.max_attempts,
                       what="every attempt audited")
    failures = events(database, "job.failure")
    bad = [row for row in failures if row.identifiers["key"] == "bad"]
    assert [(row.identifiers["retried"], row.detail) for row in bad] == [(False, "JobFailed: payload is unusable")]
    flaky = [row for row in failures if row.identifiers["key"] == "flaky"]
    assert [row.identifiers["retried"] for row in flaky] == [True] * (len(flaky) - 1) + [False]
    assert all(re.fullmatch(r"\w+Error \(\w+\)", row.detail) for row in flaky), [row.detail for row in flaky]

    assert queue.retry_failed(database) == 2
    (revived,) = events(database, "reprocess.jobs")
    assert len(revived.identifiers["job_ids"]) == 2 and revived.detail.startswith("2 failed job(s)")


def test_reprocessing_a_rejected_message_is_audited(work_config: Config, database: Database) -> None:  # noqa: F811
    strict = with_overrides(work_config, hl7={"allowed_senders": ("OTHER",)})
    (handled,) = intake_for(strict, database).handle_batch(
        [Received(oru("RP1").encode(), "10.1.1.1:5", dt.datetime.now(dt.timezone.utc))]
    )
    assert handled.outcome.status == "rejected"
    (result,) = reprocess(intake_for(work_config, database), database, None)
    assert result.status == "accepted"
    (event,) = events(database, "reprocess.hl7")
    assert event.outcome == "success" and event.identifiers["message_id"] == handled.outcome.message_id
    assert event.identifiers["status"] == "accepted" and event.identifiers["new_message_id"] != event.identifiers[
        "message_id"]


async def test_pending_events_are_written_together_with_their_own_time(
    work_config: Config, database: Database  # noqa: F811
) -> None:
    async def run(function: object) -> None:
        await asyncio.to_thread(function)  # type: ignore[arg-type]

    pending = PendingAudit(database, run, interval=60.0)
    happened = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    pending.start()
    pending.add(AuditEvent("hl7.ack", "success", actor="RIS^H@1.2.3.4:5", identifiers={"control_id": "X"}, at=happened))
    pending.add(AuditEvent("hl7.ack", "rejected", identifiers={"control_id": "Y"}))
    await pending.stop()  # writes what is pending
    rows = events(database, "hl7.ack")
    assert [(row.identifiers["control_id"], row.outcome) for row in rows] == [("X", "success"), ("Y", "rejected")]
    assert rows[0].at == happened and rows[1].at > happened


def test_error_summaries_keep_database_parameters_out() -> None:
    class DatabaseError(Exception):
        statement = "INSERT ..."
        orig = ValueError("Doe^Jane")

    assert error_summary(DatabaseError("INSERT ... [parameters: ('Doe^Jane',)]")) == "DatabaseError (ValueError)"
    assert error_summary(RuntimeError("study 1.2.3 has no stored instances yet")) == (
        "RuntimeError: study 1.2.3 has no stored instances yet")
    assert error_summary(KeyError()) == "KeyError"


@pytest.mark.parametrize("codes", [("AA",), ("AE",), ("AR",)])
def test_ack_outcomes(codes: tuple[str, ...]) -> None:
    from daemon.audit.pending import ack_event
    from daemon.hl7.codes import AckCode
    from daemon.hl7.intake import Handled, Outcome

    handled = Handled(Outcome("accepted", None, message_id=7), (b"",), tuple(AckCode(code) for code in codes), 0.1, 0.2)
    event = ack_event("10.0.0.9:2000", handled, 0.0042)
    assert event.outcome == {"AA": "success", "AE": "failure", "AR": "rejected"}[codes[0]]
    assert event.identifiers == {"control_id": None, "message_id": 7, "ack_codes": list(codes)}
    assert event.actor == "10.0.0.9:2000" and event.duration_ms == 4.2
