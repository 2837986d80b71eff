"""The study index's rows, written by statements run on the DBAPI cursor (daemon/store/driver.py), on SQLite and
PostgreSQL: new and existing patients, studies and series, counts and bytes by deltas, merged modalities, a stable
study reopened, a replacement moved into another series and study, timestamps in UTC."""

from __future__ import annotations

import datetime as dt
from pathlib import PurePosixPath
from typing import Any

import sqlalchemy as sa

from daemon.dicom.index import IndexRecord, PatientInfo, SeriesInfo, StudyInfo
from daemon.dicom.index_store import (
    IdCache,
    IndexCursor,
    IndexEntry,
    IndexStatements,
    Receipt,
    find_instances,
    record_instances,
    remove_instances,
)
from daemon.store.database import Database
from daemon.store.schema import instances, patients, series, studies

BERLIN = dt.timezone(dt.timedelta(hours=1))
T0 = dt.datetime(2026, 3, 1, 13, 0, 0, 250000, tzinfo=BERLIN)


def _receipt(sop: str, study: str, series_uid: str, modality: str, size: int, at: dt.datetime,
             name: str | None = "DOE^JANE") -> Receipt:
    record = IndexRecord(
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        instance_number=7,
        patient=PatientInfo("MRN1", "HOSP", name, "19700101", "F"),
        study=StudyInfo(study, "ACC1", "20260301", "120000", None, None),
        series=SeriesInfo(series_uid, modality, 3, "head", None),
    )
    return Receipt(record, PurePosixPath(f"{study}/{series_uid}/{sop}.dcm"), size, at, "MODALITY", "127.0.0.1:1")


def _rows(database: Database, table: sa.Table) -> list[dict[str, Any]]:
    with database.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(sa.select(table).order_by(table.c.id))]


def test_index_rows_written_on_the_driver_cursor(database: Database) -> None:
    statements = IndexStatements.for_dialect(database.engine.dialect)
    first = [_receipt("1.1", "9.1", "8.1", "MR", 100, T0), _receipt("1.2", "9.1", "8.2", "CT", 50, T0)]
    with database.begin() as connection:
        changes = record_instances(IndexCursor.of(connection, statements), [IndexEntry(r) for r in first], IdCache())
    assert changes.created == ("9.1",) and changes.reopened == ()
    with database.begin() as connection:
        connection.execute(studies.update().values(state="stable", stable_at=T0))
    later = T0 + dt.timedelta(seconds=5)
    with database.begin() as connection:
        sql = IndexCursor.of(connection, statements)
        existing = find_instances(sql, ["1.1", "1.9"])
        assert set(existing) == {"1.1"} and existing["1.1"].size_bytes == 100
        assert existing["1.1"].path == "9.1/8.1/1.1.dcm" and existing["1.1"].study_instance_uid == "9.1"
        # A fresh cache: the patient is looked up, found with another name, and updated.
        changes = record_instances(sql, [
            IndexEntry(_receipt("1.3", "9.1", "8.1", "MR", 30, later, name="DOE^J")),
            IndexEntry(_receipt("1.1", "9.2", "8.3", "US", 70, later, name="DOE^J"), replaces=existing["1.1"]),
        ], IdCache())
    assert changes.reopened == ("9.1",) and changes.created == ("9.2",)
    assert changes.last_received == {"9.1": later, "9.2": later}

    [patient] = _rows(database, patients)
    assert (patient["patient_id"], patient["issuer_of_patient_id"]) == ("MRN1", "HOSP")
    assert patient["patient_name"] == "DOE^J"
    study_rows = {row["study_instance_uid"]: row for row in _rows(database, studies)}
    one, two = study_rows["9.1"], study_rows["9.2"]
    assert (one["instance_count"], one["total_bytes"], one["modalities"]) == (2, 80, "CT\\MR")
    assert (one["state"], one["stable_at"], one["accession_number"], one["calling_ae_title"]) == (
        "receiving", None, "ACC1", "MODALITY")
    assert one["first_received_at"] == T0 and one["last_received_at"] == later
    assert one["last_received_at"].tzinfo is not None and one["patient_ref"] == patient["id"]
    assert (two["instance_count"], two["total_bytes"], two["modalities"], two["stable_count"]) == (1, 70, "US", 0)
    series_rows = {row["series_instance_uid"]: row for row in _rows(database, series)}
    assert {uid: (row["instance_count"], row["total_bytes"]) for uid, row in series_rows.items()} == {
        "8.1": (1, 30), "8.2": (1, 50), "8.3": (1, 70)}
    assert series_rows["8.3"]["study_ref"] == two["id"] and series_rows["8.1"]["modality"] == "MR"
    instance_rows = {row["sop_instance_uid"]: row for row in _rows(database, instances)}
    moved = instance_rows["1.1"]
    assert moved["id"] == existing["1.1"].id and moved["series_ref"] == series_rows["8.3"]["id"]
    assert (moved["study_instance_uid"], moved["size_bytes"], moved["path"]) == ("9.2", 70, "9.2/8.3/1.1.dcm")
    assert moved["received_at"] == later and moved["generated"] is False and moved["peer"] == "127.0.0.1:1"
    assert instance_rows["1.3"]["instance_number"] == 7 and instance_rows["1.3"]["received_at"] == later

    with database.begin() as connection:
        stored = find_instances(IndexCursor.of(connection, statements), ["1.3"])
        remove_instances(connection, list(stored.values()))
    assert {row["sop_instance_uid"] for row in _rows(database, instances)} == {"1.1", "1.2"}
    assert {row["series_instance_uid"]: row["instance_count"] for row in _rows(database, series)}["8.1"] == 0
    assert {row["study_instance_uid"]: row["total_bytes"] for row in _rows(database, studies)}["9.1"] == 50
