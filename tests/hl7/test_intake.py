"""Durable intake on each database backend: idempotency, corrections, cancellations, rejected messages kept, audit."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from daemon.hl7.intake import ACCEPTED, DUPLICATE, IGNORED, REJECTED, Intake, Received, SenderPolicy
from daemon.hl7.parse import ParseSettings
from daemon.store.database import Database
from daemon.store.schema import audit_events, hl7_messages, jobs, reports
from tests.hl7.messages import mdm, oru

PEER = "127.0.0.1:40000"


def _intake(database: Database, senders: tuple[str, ...] = (), max_bytes: int = 1 << 20) -> Intake:
    return Intake(database, ParseSettings(), SenderPolicy.parse(senders), max_bytes)


def _received(message: str | bytes, **kwargs: Any) -> Received:
    raw = message.encode() if isinstance(message, str) else message
    return Received(raw, PEER, dt.datetime.now(dt.timezone.utc), **kwargs)


def _rows(database: Database, table: sa.Table, *where: Any) -> list[Any]:
    with database.connect() as connection:
        return list(connection.execute(sa.select(table).where(*where).order_by(table.c.id)))


def test_accepted_report_is_stored_with_its_job_and_audit(database: Database) -> None:
    (handled,) = _intake(database).handle_batch(
        [_received(oru("A1", extra_segments=["ZDS|1.2.3.4^RIS^Application^DICOM"]))]
    )
    assert handled.outcome.status == ACCEPTED
    assert [ack.split(b"\r")[1] for ack in handled.acks] == [b"MSA|AA|A1"]
    (message,) = _rows(database, hl7_messages)
    assert (message.status, message.ack_code, message.control_id, message.version) == (ACCEPTED, "AA", "A1", "2.5.1")
    assert bytes(message.raw) == oru("A1", extra_segments=["ZDS|1.2.3.4^RIS^Application^DICOM"]).encode()
    (report,) = _rows(database, reports)
    assert report.message_id == message.id
    assert (report.accession_number, report.result_status, report.state) == ("ACC1001", "F", "active")
    assert report.study_instance_uid == "1.2.3.4"
    assert report.patient_id == "MRN12345" and report.issuer_of_patient_id == "HOSP"
    assert report.patient_identifiers == [{"id": "MRN12345", "authority": "HOSP", "type": "MR"}]
    assert report.text.startswith("MRI HEAD WITHOUT CONTRAST\nFindings")
    (job,) = _rows(database, jobs)
    assert (job.kind, job.key, job.payload, job.state) == (
        "classify",
        f"report:{report.id}",
        {"report_id": report.id},
        "pending",
    )
    (audit,) = [a for a in _rows(database, audit_events) if a.kind == "hl7.message"]
    assert (audit.kind, audit.outcome) == ("hl7.message", "success")
    (stored,) = [a for a in _rows(database, audit_events) if a.kind == "report.stored"]
    assert stored.identifiers["report_id"] == report.id and "MRN12345" not in str(stored.identifiers)
    assert audit.identifiers["control_id"] == "A1" and audit.identifiers["report_ids"] == [report.id]
    assert "MRN12345" not in str(audit.identifiers) and "DOE" not in str(audit.detail)


def test_resend_is_reacknowledged_without_a_second_report(database: Database) -> None:
    intake = _intake(database)
    first, again_in_same_batch = intake.handle_batch([_received(oru("D1")), _received(oru("D1"))])
    (later,) = intake.handle_batch([_received(oru("D1").replace("20240305143000", "20240305150000", 1))])
    assert first.outcome.status == ACCEPTED
    assert again_in_same_batch.outcome.status == later.outcome.status == DUPLICATE
    assert [a.split(b"\r")[1] for h in (again_in_same_batch, later) for a in h.acks] == [b"MSA|AA|D1"] * 2
    assert len(_rows(database, reports)) == 1
    assert len(_rows(database, jobs)) == 1
    duplicates = _rows(database, hl7_messages, hl7_messages.c.status == DUPLICATE)
    assert [d.duplicate_of for d in duplicates] == [first.outcome.message_id] * 2
    assert [a.outcome for a in _rows(database, audit_events) if a.kind == "hl7.message"] == [
        "success",
        "duplicate",
        "duplicate",
    ]


def test_reused_control_id_with_other_content_is_refused(database: Database) -> None:
    intake = _intake(database)
    intake.handle_batch([_received(oru("R1"))])
    (handled,) = intake.handle_batch([_received(oru("R1", accession="OTHER", lines=("different report",)))])
    assert handled.outcome.status == REJECTED
    assert handled.outcome.problem is not None and handled.outcome.problem.code.value == "205"
    assert b"MSA|AE|R1" in handled.acks[0]
    assert len(_rows(database, reports)) == 1


def test_same_control_id_from_another_sender_is_a_new_message(database: Database) -> None:
    intake = _intake(database)
    intake.handle_batch([_received(oru("S1"))])
    (handled,) = intake.handle_batch([_received(oru("S1", sending="RIS2|CLINIC", accession="ACC9"))])
    assert handled.outcome.status == ACCEPTED
    assert len(_rows(database, reports)) == 2


def test_correction_supersedes_and_keeps_history(database: Database) -> None:
    intake = _intake(database)
    intake.handle_batch([_received(oru("C1", status="P", lines=("prelim",)))])
    intake.handle_batch([_received(oru("C2", status="F", lines=("final",)))])
    (corrected,) = intake.handle_batch([_received(oru("C3", status="C", lines=("corrected",)))])
    rows = _rows(database, reports)
    assert [(r.result_status, r.state, r.text) for r in rows] == [
        ("P", "superseded", "prelim"),
        ("F", "superseded", "final"),
        ("C", "active", "corrected"),
    ]
    assert [r.supersedes_id for r in rows] == [None, rows[0].id, rows[1].id]
    assert corrected.outcome.superseded_ids == (rows[1].id,)
    assert [j.key for j in _rows(database, jobs, jobs.c.kind == "classify")] == [f"report:{r.id}" for r in rows]


def test_cancellation_withdraws_and_queues_withdraw(database: Database) -> None:
    intake = _intake(database)
    intake.handle_batch([_received(oru("X1"))])
    (cancel,) = intake.handle_batch([_received(oru("X2", status="X", lines=()))])
    (report,) = _rows(database, reports)
    assert report.state == "withdrawn"
    assert cancel.outcome.status == ACCEPTED and cancel.outcome.withdrawn_ids == (report.id,)
    (withdraw,) = _rows(database, jobs, jobs.c.kind == "withdraw")
    assert (withdraw.key, withdraw.payload) == (f"report:{report.id}", {"report_id": report.id})
    (nothing,) = intake.handle_batch([_received(oru("X3", status="X", lines=(), accession="NEVERSEEN"))])
    assert nothing.outcome.status == ACCEPTED and "no active report" in "; ".join(nothing.outcome.warnings)


def test_preliminary_after_final_does_not_replace_it(database: Database) -> None:
    intake = _intake(database)
    intake.handle_batch([_received(oru("P1", status="F", lines=("final",)))])
    (late,) = intake.handle_batch([_received(oru("P2", status="P", lines=("late prelim",)))])
    assert late.outcome.status == ACCEPTED and late.outcome.report_ids == ()
    assert [(r.text, r.state) for r in _rows(database, reports)] == [("final", "active"), ("late prelim", "superseded")]
    assert len(_rows(database, jobs)) == 1


def test_rejected_messages_are_kept_raw_with_reason_and_audited(database: Database) -> None:
    garbage = b"\x00\xffnot hl7 at all"
    bad_status = oru("B2", status="Q")
    handled = _intake(database).handle_batch([_received(garbage), _received(bad_status)])
    assert [h.outcome.status for h in handled] == [REJECTED, REJECTED]
    assert handled[0].acks[0].split(b"\r")[1].startswith(b"MSA|AR|")
    assert b"MSA|AE|B2" in handled[1].acks[0] and b"ERR||OBR^1^25^1|103^" in handled[1].acks[0]
    rows = _rows(database, hl7_messages)
    assert [bytes(r.raw) for r in rows] == [garbage, bad_status.encode()]
    assert [(r.status, r.ack_code, r.error_code) for r in rows] == [(REJECTED, "AR", "100"), (REJECTED, "AE", "103")]
    assert "OBR-25" in rows[1].error
    assert [a.outcome for a in _rows(database, audit_events)] == ["rejected", "rejected"]
    assert _rows(database, reports) == []


def test_oversize_is_answered_ar_and_its_head_kept(database: Database) -> None:
    head = oru("O1").encode()[:200]
    (handled,) = _intake(database, max_bytes=200).handle_batch([_received(head, oversize=5_000_000)])
    assert handled.outcome.status == REJECTED
    assert b"MSA|AR|O1" in handled.acks[0]
    (row,) = _rows(database, hl7_messages)
    assert (row.size_bytes, len(row.raw), row.error_code) == (5_000_000, 200, "207")


def test_sender_allowlist(database: Database) -> None:
    intake = _intake(database, senders=("RIS^HOSPITAL", "PACS"))
    allowed, wrong_facility, unknown, any_facility = intake.handle_batch(
        [
            _received(oru("L1", sending="ris|hospital", accession="L1")),
            _received(oru("L2", sending="RIS|ELSEWHERE", accession="L2")),
            _received(oru("L3", sending="ROGUE|HOSPITAL", accession="L3")),
            _received(oru("L4", sending="PACS|ANY", accession="L4")),
        ]
    )
    assert allowed.outcome.status == any_facility.outcome.status == ACCEPTED
    assert b"MSA|AR|L2" in wrong_facility.acks[0] and b"ERR||MSH^1^4^1|103^" in wrong_facility.acks[0]
    assert b"MSA|AR|L3" in unknown.acks[0] and b"ERR||MSH^1^3^1|103^" in unknown.acks[0]


def test_acks_sent_to_us_are_ignored(database: Database) -> None:
    ack = "MSH|^~\\&|RIS|HOSP|NL|NL|20240305143000||ACK^R01^ACK|K1|P|2.5.1\rMSA|CA|NL1\r"
    (handled,) = _intake(database).handle_batch([_received(ack)])
    assert handled.outcome.status == IGNORED and handled.acks == ()
    assert _rows(database, hl7_messages) == []


def test_mdm_and_multi_order_messages(database: Database) -> None:
    two_orders = (
        "MSH|^~\\&|RIS|HOSP|NL|NL|20240305143000||ORU^R01|M2|P|2.5\r"
        "OBR|1||ACC96|MRHEAD|||||||||||||||||||||F\r"
        "OBR|2||ACC97|MRSPINE|||||||||||||||||||||F\r"
        "OBX|1|TX|^Report||Combined report.||||||F\r"
    )
    handled = _intake(database).handle_batch([_received(mdm("M1")), _received(two_orders)])
    assert [len(h.outcome.report_ids) for h in handled] == [1, 2]
    assert [r.accession_number for r in _rows(database, reports)] == ["ACC2001", "ACC96", "ACC97"]


def test_a_failing_message_does_not_cost_the_batch(database: Database) -> None:
    with database.begin() as connection:
        if database.dialect == "sqlite":
            connection.exec_driver_sql(
                "CREATE TRIGGER boom BEFORE INSERT ON reports WHEN NEW.accession_number = 'BOOM' "
                "BEGIN SELECT RAISE(ABORT, 'boom'); END"
            )
        else:
            connection.exec_driver_sql(
                "CREATE FUNCTION boom() RETURNS trigger AS $$ BEGIN "
                "IF NEW.accession_number = 'BOOM' THEN RAISE EXCEPTION 'boom'; END IF; RETURN NEW; "
                "END $$ LANGUAGE plpgsql"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER boom BEFORE INSERT ON reports FOR EACH ROW EXECUTE FUNCTION boom()"
            )
    handled = _intake(database).handle_batch(
        [
            _received(oru("G1", accession="OK1")),
            _received(oru("G2", accession="BOOM")),
            _received(oru("G3", accession="OK2")),
        ]
    )
    assert [h.outcome.status for h in handled] == [ACCEPTED, REJECTED, ACCEPTED]
    assert b"MSA|AR|G2" in handled[1].acks[0] and b"207^" in handled[1].acks[0]
    assert [r.accession_number for r in _rows(database, reports)] == ["OK1", "OK2"]
    kept = _rows(database, hl7_messages, hl7_messages.c.control_id == "G2")
    assert [k.status for k in kept] == [REJECTED]


def test_rejected_messages_can_be_reprocessed(database: Database) -> None:
    (refused,) = _intake(database, senders=("OTHER",)).handle_batch([_received(oru("Q1"))])
    assert refused.outcome.status == REJECTED
    ((message_id, outcome),) = _intake(database).reprocess([refused.outcome.message_id])  # type: ignore[list-item]
    assert message_id == refused.outcome.message_id and outcome.status == ACCEPTED
    original = _rows(database, hl7_messages, hl7_messages.c.id == message_id)[0]
    assert original.reprocessed_at is not None
    assert len(_rows(database, reports)) == 1


@pytest.mark.parametrize("count", [1, 50])
def test_batches_keep_arrival_order_for_one_accession(database: Database, count: int) -> None:
    items = [_received(oru(f"O{i}", status="F" if i == 0 else "C", lines=(f"version {i}",))) for i in range(count)]
    _intake(database).handle_batch(items)
    rows = _rows(database, reports)
    assert [r.state for r in rows] == ["superseded"] * (count - 1) + ["active"]
    assert rows[-1].text == f"version {count - 1}"


def test_logs_never_carry_report_text_or_patient_identity(database: Database, caplog: pytest.LogCaptureFixture) -> None:
    with database.begin() as connection:
        if database.dialect != "sqlite":
            pytest.skip("the failure is injected with a SQLite trigger")
        connection.exec_driver_sql(
            "CREATE TRIGGER boom BEFORE INSERT ON reports WHEN NEW.text LIKE '%SECRET%' "
            "BEGIN SELECT RAISE(ABORT, 'no'); END"
        )
    caplog.set_level("DEBUG")
    secret = oru("LOG1", lines=("SECRET FINDING",), patient="PID|1||MRN-SECRET^^^HOSP^MR||SECRETNAME^ANN")
    handled = _intake(database).handle_batch([_received(secret), _received(oru("LOG2", accession="LOG2"))])
    assert [h.outcome.status for h in handled] == [REJECTED, ACCEPTED]
    assert caplog.records, "the failure is logged"
    assert "SECRET" not in caplog.text


def test_batch_lookups_use_the_indexes(tmp_path: Any) -> None:
    """The resend and accession lookups, as intake runs them, must stay index searches as the tables grow (no
    scan by status or state): one look-up per control id and one per accession."""
    from daemon.hl7 import intake as intake_module
    from daemon.store.database import open_database
    from daemon.store.migrate import upgrade_to_head

    database = open_database(f"sqlite:///{tmp_path / 'plan.db'}")
    upgrade_to_head(database)
    statements = intake_module._Statements.for_dialect(database.engine.dialect)
    try:
        with database.connect() as connection:
            plans = []
            for statement, parameters in (
                (statements.accepted_from_sender, {"application": "A", "facility": "F", "control_id": "1"}),
                (statements.reports_with_accession, {"accession": "X1"}),
            ):
                explain = f"EXPLAIN QUERY PLAN {statement.sql}"
                rows = connection.exec_driver_sql(explain, statement.parameters(parameters))
                plans.append(" ".join(row[-1] for row in rows))
    finally:
        database.dispose()
    assert "uq_hl7_messages_accepted_control_id" in plans[0]
    assert "ix_reports_accession_number" in plans[1]
