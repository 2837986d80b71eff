"""Statements compiled once and run on the DBAPI cursor write the rows SQLAlchemy's own execution writes, on
SQLite and PostgreSQL (paramstyles `?` and `%(name)s`, UTC timestamps, JSON, JSON null, new primary keys)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa

from daemon.audit import trail
from daemon.store import queue
from daemon.store.database import Database
from daemon.store.driver import DriverStatement, cursor_of
from daemon.store.schema import audit_events, hl7_messages, jobs, reports

REPORT_KEYS = tuple(column.key for column in reports.columns if column.key != "id")
MESSAGE_KEYS = tuple(column.key for column in hl7_messages.columns if column.key != "id")
BERLIN = dt.timezone(dt.timedelta(hours=1))


def _message(control_id: str) -> dict[str, Any]:
    return {
        "received_at": dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=BERLIN),
        "peer": "127.0.0.1:1",
        "sending_application": "RIS",
        "sending_facility": "HOSP",
        "control_id": control_id,
        "message_type": "ORU^R01",
        "version": "2.5.1",
        "raw": b"MSH|^~\\&|\r\x00\xff",
        "size_bytes": 12,
        "content_hash": "ab" * 32,
        "status": "accepted",
        "ack_code": "AA",
        "error": None,
        "error_code": None,
        "duplicate_of": None,
        "reprocessed_at": None,
    }


def _report(message_id: int, identifiers: list[dict[str, str]] | None, **changes: Any) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "source": "hl7",
        "external_id": "C1",
        "accession_number": "ACC1",
        "study_instance_uid": "1.2.3",
        "patient_id": "MRN1",
        "issuer_of_patient_id": "HOSP",
        "patient_identifiers": identifiers,
        "patient_name": "DOE^JANE",
        "modality": "MR",
        "procedure": "MRI head",
        "result_status": "F",
        "observation_time": dt.datetime(2026, 3, 1, 11, 0, tzinfo=BERLIN),
        "text": "No acute finding.\n'quoted' %(not a parameter)s",
        "state": "active",
        "supersedes_id": None,
        "created_at": dt.datetime(2026, 3, 1, 12, 0, 1, tzinfo=dt.timezone.utc),
        **changes,
    }


def _comparable(row: sa.Row[Any]) -> dict[str, Any]:
    """A row without the columns that differ between the two writes (keys, and the control id)."""
    return {key: value for key, value in row._mapping.items() if key not in ("id", "message_id", "control_id")}


def test_rows_and_new_keys_match_sqlalchemy(database: Database) -> None:
    dialect = database.engine.dialect
    insert_message = DriverStatement.insert_returning_id(hl7_messages, dialect, MESSAGE_KEYS)
    insert_report = DriverStatement.insert_returning_id(reports, dialect, REPORT_KEYS)
    identifiers = [{"id": "MRN1", "authority": "HOSP", "type": "MR"}]
    with database.begin() as connection:
        cursor = cursor_of(connection)
        driver_message = insert_message.insert(cursor, _message("D1"))
        driver_reports = [
            insert_report.insert(cursor, _report(driver_message, identifiers)),
            insert_report.insert(cursor, _report(driver_message, None, observation_time=None)),
        ]
        orm_message = connection.execute(hl7_messages.insert(), _message("S1")).inserted_primary_key[0]
        orm_reports = [
            connection.execute(reports.insert(), _report(orm_message, identifiers)).inserted_primary_key[0],
            connection.execute(
                reports.insert(), _report(orm_message, None, observation_time=None)
            ).inserted_primary_key[0],
        ]
    assert driver_message != orm_message and len(set(driver_reports + orm_reports)) == 4
    with database.connect() as connection:
        messages = {r.id: r for r in connection.execute(sa.select(hl7_messages))}
        stored = {r.id: r for r in connection.execute(sa.select(reports))}
        # JSON null as SQLAlchemy writes it for None, in SQL terms too.
        nulls = connection.execute(
            sa.select(reports.c.id).where(reports.c.patient_identifiers.is_(sa.null()))
        ).scalars().all()
    assert messages[driver_message].control_id == "D1" and bytes(messages[driver_message].raw) == _message("D1")["raw"]
    assert _comparable(messages[driver_message]) == _comparable(messages[orm_message])
    assert messages[driver_message].received_at == _message("D1")["received_at"]
    assert messages[driver_message].received_at.tzinfo is not None
    for driver_id, orm_id in zip(driver_reports, orm_reports, strict=True):
        assert stored[driver_id].message_id == driver_message and stored[orm_id].message_id == orm_message
        assert _comparable(stored[driver_id]) == _comparable(stored[orm_id])
    assert stored[driver_reports[0]].patient_identifiers == identifiers
    assert stored[driver_reports[0]].observation_time == _report(0, None)["observation_time"]
    assert (driver_reports[1] in nulls) == (orm_reports[1] in nulls)


def test_executemany_converts_a_shared_value_once_and_each_row_right(database: Database) -> None:
    """Rows that share one timestamp object (a batch's `now`) and rows that do not, JSON and None among them."""
    statement = DriverStatement.compile(audit_events.insert(), database.engine.dialect, trail._KEYS)
    shared = dt.datetime(2026, 3, 1, 12, 0, tzinfo=BERLIN)
    other = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.timezone.utc)
    rows = [
        {"at": shared, "kind": "a", "outcome": "success", "actor": None, "identifiers": {"n": 1}, "duration_ms": 1.5,
         "detail": None},
        {"at": shared, "kind": "b", "outcome": "failure", "actor": "x", "identifiers": {}, "duration_ms": None,
         "detail": "why"},
        {"at": other, "kind": "c", "outcome": "success", "actor": None, "identifiers": {"n": [1, 2]},
         "duration_ms": 0.0, "detail": None},
        {"at": shared, "kind": "d", "outcome": "success", "actor": None, "identifiers": {"n": 1}, "duration_ms": 2.0,
         "detail": None},
    ]
    with database.begin() as connection:
        statement.executemany(cursor_of(connection), rows)
        statement.executemany(cursor_of(connection), [])
    with database.connect() as connection:
        stored = connection.execute(sa.select(audit_events).order_by(audit_events.c.id)).all()
    assert [(r.at, r.kind, r.outcome, r.actor, r.identifiers, r.duration_ms, r.detail) for r in stored] == [
        (row["at"], row["kind"], row["outcome"], row["actor"], row["identifiers"], row["duration_ms"], row["detail"])
        for row in rows
    ]


def test_driver_audit_writes_what_record_many_writes(database: Database) -> None:
    events = [
        trail.AuditEvent("hl7.message", trail.SUCCESS, actor="RIS^H@peer", identifiers={"control_id": "1", "x": None},
                         duration_ms=0.25, detail="d" * 5000),
        trail.AuditEvent("hl7.ack", trail.REJECTED, at=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)),
    ]
    with database.begin() as connection:
        trail.record_many(connection, events)
        trail.DriverAudit.for_dialect(database.engine.dialect).record_many(cursor_of(connection), events)
    with database.connect() as connection:
        stored = connection.execute(sa.select(audit_events).order_by(audit_events.c.id)).all()
    fields = [(r.kind, r.outcome, r.actor, r.identifiers, r.duration_ms, r.detail) for r in stored]
    assert fields[:2] == fields[2:] and fields[0][3] == {"control_id": "1"} and len(fields[0][5]) == 4000
    assert stored[1].at == stored[3].at == dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def test_driver_enqueue_notifies_each_kind_on_commit(database: Database, database_url: str) -> None:
    if database.dialect != "postgresql":
        pytest.skip("PostgreSQL LISTEN/NOTIFY")
    import psycopg

    url = sa.make_url(database_url).set(drivername="postgresql")
    enqueue = queue.DriverEnqueue.for_dialect(database.engine.dialect)
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as listener:
        listener.execute(f"LISTEN {queue.NOTIFY_CHANNEL}")
        with database.begin() as connection:
            enqueue.enqueue_many(
                cursor_of(connection), [("classify", "r1", {}), ("classify", "r2", {}), ("withdraw", "r1", {})]
            )
        heard = sorted(n.payload for n in listener.notifies(timeout=5, stop_after=2))
    assert heard == ["classify", "withdraw"]


def test_an_insert_that_leaves_out_a_defaulted_column_is_refused(database: Database) -> None:
    with pytest.raises(ValueError, match="payload"):
        DriverStatement.compile(jobs.insert(), database.engine.dialect, ("kind", "key", "state", "not_before"))
    with pytest.raises(ValueError, match="keys"):
        DriverStatement.compile(jobs.insert(), database.engine.dialect)
    lookup = sa.select(jobs.c.id).where(jobs.c.key == sa.bindparam("key"))
    select = DriverStatement.compile(lookup, database.engine.dialect)
    with pytest.raises(TypeError):
        with database.begin() as connection:
            select.insert(cursor_of(connection), {"key": "x"})


def test_fetched_rows_are_converted_as_sqlalchemy_reads_them(database: Database) -> None:
    dialect = database.engine.dialect
    insert_message = DriverStatement.insert_returning_id(hl7_messages, dialect, MESSAGE_KEYS)
    select = sa.select(hl7_messages.c.id, hl7_messages.c.received_at, hl7_messages.c.raw,
                       hl7_messages.c.reprocessed_at).where(hl7_messages.c.control_id == sa.bindparam("control_id"))
    lookup = DriverStatement.compile(select, dialect)
    with database.begin() as connection:
        cursor = cursor_of(connection)
        message_id = insert_message.insert(cursor, _message("F1"))
        fetched = lookup.fetchone(cursor, {"control_id": "F1"})
        every = lookup.fetchall(cursor, {"control_id": "F1"})
        absent = lookup.fetchone(cursor, {"control_id": "none"})
        expected = tuple(connection.execute(select, {"control_id": "F1"}).one())
    assert fetched is not None and absent is None and every == [fetched]
    assert fetched[0] == message_id and fetched[1] == _message("F1")["received_at"] and fetched[1].tzinfo is not None
    assert (fetched[0], fetched[1], bytes(fetched[2]), fetched[3]) == (
        expected[0], expected[1], bytes(expected[2]), expected[3])
