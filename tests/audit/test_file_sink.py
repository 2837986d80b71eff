"""The audit file: committed rows only, no personal identifiers, resumable, rotated."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import sqlalchemy as sa

from daemon.audit import trail
from daemon.audit.file_sink import AuditFile, file_entry
from daemon.store.database import Database, open_database
from daemon.store.migrate import upgrade_to_head
from daemon.store.schema import audit_events


def test_rows_are_copied_once_without_personal_identifiers(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'a.db'}")
    upgrade_to_head(database)
    with database.begin() as c:
        trail.record(c, "hl7.message", trail.SUCCESS, actor="RIS@127.0.0.1",
                     identifiers={"control_id": "M1", "accession_number": "A1", "patient_id": "P-SECRET", "patient_name": "Doe^J"})
    try:
        with database.begin() as c:
            trail.record(c, "hl7.message", trail.SUCCESS, identifiers={"control_id": "ROLLED-BACK"})
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    sink = AuditFile(tmp_path / "audit" / "audit.jsonl")
    assert sink.copy_new_rows(database) == 1
    assert sink.copy_new_rows(database) == 0
    lines = (tmp_path / "audit" / "audit.jsonl").read_text().splitlines()
    entry = json.loads(lines[0])
    assert entry["identifiers"] == {"control_id": "M1", "accession_number": "A1"}
    assert "P-SECRET" not in lines[0] and "Doe" not in lines[0] and "ROLLED-BACK" not in lines[0]

    # A new sink over the same file resumes after the last copied row.
    with database.begin() as c:
        trail.record(c, "dicom.instance", trail.SUCCESS, identifiers={"sop_instance_uid": "1.2.3"})
    assert AuditFile(tmp_path / "audit" / "audit.jsonl").copy_new_rows(database) == 1
    assert len((tmp_path / "audit" / "audit.jsonl").read_text().splitlines()) == 2


def test_file_rotates_by_size(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'a.db'}")
    upgrade_to_head(database)
    sink = AuditFile(tmp_path / "audit.jsonl", max_bytes=200, keep=3)
    for index in range(5):
        with database.begin() as c:
            trail.record(c, "test", trail.SUCCESS, identifiers={"n": index}, detail="x" * 150)
        sink.copy_new_rows(database)
    assert (tmp_path / "audit.jsonl.1").exists() and (tmp_path / "audit.jsonl.3").exists()
    assert not (tmp_path / "audit.jsonl.4").exists()


def test_file_entry_is_pure_and_drops_personal_keys() -> None:
    import datetime as dt

    row = {"id": 7, "at": dt.datetime(2026, 1, 1), "kind": "k", "outcome": "success", "actor": None,
           "identifiers": {"patient_id": "X", "study_instance_uid": "1.2"}, "duration_ms": None, "detail": None}
    assert file_entry(row) == {"id": 7, "at": "2026-01-01T00:00:00.000+00:00", "kind": "k", "outcome": "success",
                               "identifiers": {"study_instance_uid": "1.2"}}


def test_lines_are_those_of_the_rows_sqlalchemy_reads(database: Database, tmp_path: Path) -> None:
    """The sink reads with a driver statement: each line is what file_entry makes of SQLAlchemy's row."""
    at = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)  # settled (PostgreSQL copies settled rows)
    with database.begin() as c:
        c.execute(audit_events.insert(), [
            {"at": at, "kind": "hl7.message", "outcome": "success", "actor": "RIS@127.0.0.1",
             "identifiers": {"control_id": "M1", "patient_id": "P-SECRET", "nested": {"a": [1, 2.5, None]}},
             "duration_ms": 1.25, "detail": "caf\u00e9 \u2713"},
            {"at": at + dt.timedelta(microseconds=1500), "kind": "labels.written", "outcome": "failure",
             "actor": None, "identifiers": {}, "duration_ms": None, "detail": None},
        ])
    sink = AuditFile(tmp_path / "audit.jsonl")
    assert sink.copy_new_rows(database, batch=1) == 2  # two reads of one row each
    with database.connect() as c:
        rows = c.execute(sa.select(audit_events).order_by(audit_events.c.id)).mappings().all()
    expected = [json.dumps(file_entry(row), default=str, ensure_ascii=False) for row in rows]
    assert (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines() == expected
