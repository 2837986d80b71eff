"""The audit file: committed rows only, no personal identifiers, resumable, rotated."""

from __future__ import annotations

import json
from pathlib import Path

from daemon.audit import trail
from daemon.audit.file_sink import AuditFile, file_entry
from daemon.store.database import open_database
from daemon.store.migrate import upgrade_to_head


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
