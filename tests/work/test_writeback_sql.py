"""The write-back's driver statements read and write the rows SQLAlchemy's execution of the same statements does."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from daemon.config import Config
from daemon.store.database import Database
from daemon.store.driver import cursor_of
from daemon.store.schema import audit_events, instances, series, studies, writebacks
from daemon.work import writeback_sql
from daemon.work.writeback import write_back
from daemon.work.writeback_sql import WritebackStatements
from tests.work.test_writeback import STUDY_UID, add_labels, config, store_study  # noqa: F401  (fixture)

NOW = dt.datetime(2026, 11, 27, 1, 2, 3, 456789, tzinfo=dt.timezone.utc)
SR_SERIES = "2.25.4242"


class _Rollback(Exception):
    pass


def tables_after(database: Database, change: Callable[[Connection], Any]) -> dict[str, list[dict[str, Any]]]:
    """The rows of the tables the write-back writes after `change`, which is then rolled back. Keys are left out
    (PostgreSQL's sequences do not roll back) and references to the series `change` made (it returns its id)
    read "new"."""
    found: dict[str, list[dict[str, Any]]] = {}
    try:
        with database.begin() as connection:
            new_series = change(connection)
            for table in (instances, series, studies, writebacks, audit_events):
                rows = connection.execute(sa.select(table).order_by(*table.primary_key.columns)).all()
                found[table.name] = [
                    {key: "new" if key == "series_ref" and value == new_series else value
                     for key, value in row._mapping.items() if key != "id"}
                    for row in rows
                ]
            raise _Rollback
    except _Rollback:
        pass
    return found


def test_queries_read_what_sqlalchemy_reads(config: Config, database: Database) -> None:
    store_study(config, database)
    label_id = add_labels(database)
    write_back(config, database, STUDY_UID, label_id)  # an SR: generated rows and their series
    sql = WritebackStatements.for_dialect(database.engine.dialect)
    with database.connect() as connection:
        cursor = cursor_of(connection)
        study_id = connection.execute(writeback_sql.STUDY_ID, {"uid": STUDY_UID}).scalar_one()
        sr_series = connection.execute(
            sa.select(series.c.series_instance_uid).where(series.c.study_ref == study_id, series.c.modality == "SR")
        ).scalar_one()
        cases = [
            (sql.label_row, writeback_sql.LABEL_ROW, {"label_id": label_id}),
            (sql.label_row, writeback_sql.LABEL_ROW, {"label_id": label_id + 99}),
            (sql.stored_instances, writeback_sql.STORED_INSTANCES, {"uid": STUDY_UID}),
            (sql.current_sr, writeback_sql.CURRENT_SR, {"uid": STUDY_UID}),
            (sql.study_id, writeback_sql.STUDY_ID, {"uid": STUDY_UID}),
            (sql.series_id, writeback_sql.SERIES_ID, {"uid": sr_series}),
            (sql.series_id, writeback_sql.SERIES_ID, {"uid": "2.25.0"}),
            (sql.generated_rows, writeback_sql.GENERATED_ROWS, {"uid": STUDY_UID}),
        ]
        for query, statement, values in cases:
            expected = connection.execute(statement, values).all()
            got = query.all(cursor, values)
            assert [tuple(row) for row in got] == [tuple(row) for row in expected], statement
            assert [row._fields for row in got] == [tuple(row._fields) for row in expected]
        label_row = sql.label_row.one(cursor, {"label_id": label_id})
        assert label_row is not None and isinstance(label_row.labelled_at, dt.datetime)
        assert label_row.labelled_at.tzinfo is not None and isinstance(label_row.current, bool)
        assert isinstance(label_row.labels, dict)


def test_writes_change_the_rows_sqlalchemy_changes(config: Config, database: Database) -> None:
    stored = store_study(config, database)
    label_id = add_labels(database)
    sql = WritebackStatements.for_dialect(database.engine.dialect)
    with database.connect() as connection:
        study_id = connection.execute(writeback_sql.STUDY_ID, {"uid": STUDY_UID}).scalar_one()
        first = connection.execute(writeback_sql.STORED_INSTANCES, {"uid": STUDY_UID}).first()
    assert first is not None and stored
    new_series = {
        "series_instance_uid": SR_SERIES, "study_ref": study_id, "modality": "SR", "series_number": 9901,
        "series_description": "neurolabel labels", "instance_count": 1, "total_bytes": 1234,
    }
    instance = {
        "sop_instance_uid": "2.25.4243", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.88.33", "series_ref": None,
        "study_instance_uid": STUDY_UID, "instance_number": 2, "transfer_syntax_uid": "1.2.840.10008.1.2.1",
        "path": "x/y.dcm", "size_bytes": 1234, "received_at": NOW, "generated": True,
    }
    writeback = {
        "study_instance_uid": STUDY_UID, "study_label_id": label_id, "action": "labels", "state": "done",
        "instances_tagged": 2, "instances_unchanged": 0, "sr_sop_instance_uid": "2.25.4243",
        "sr_series_instance_uid": SR_SERIES, "replaced_sr_sop_instance_uid": None, "forwarded_to": ["A@h:1"],
        "started_at": NOW, "finished_at": NOW + dt.timedelta(seconds=1),
    }
    updates = [
        ("update_size", writeback_sql.UPDATE_SIZE, {"instance_id": first.id, "size": 4321}),
        ("grow_series", writeback_sql.GROW_SERIES, {"series_id": first.series_ref, "delta": 17}),
        ("grow_study", writeback_sql.GROW_STUDY, {"uid": STUDY_UID, "delta": -5}),
        ("set_sr_series", writeback_sql.SET_SR_SERIES, {"series_id": first.series_ref, "count": 1, "size": 99}),
        ("change_study_counts", writeback_sql.CHANGE_STUDY_COUNTS, {"study_id": study_id, "count": 1, "delta": 7}),
        ("delete_instance", writeback_sql.DELETE_INSTANCE, {"instance_id": first.id}),
    ]

    def driver_writes(connection: Connection) -> None:
        cursor = cursor_of(connection)
        series_id = sql.insert_series.insert(cursor, new_series)
        sql.insert_instance.execute(cursor, {**instance, "series_ref": series_id})
        sql.insert_writeback.execute(cursor, writeback)
        for name, _, values in updates[:-1]:
            getattr(sql, name).execute(cursor, values)
        return series_id

    def sqlalchemy_writes(connection: Connection) -> None:
        series_id = connection.execute(series.insert(), new_series).inserted_primary_key[0]
        connection.execute(instances.insert(), {**instance, "series_ref": series_id})
        connection.execute(writebacks.insert(), writeback)
        for _, statement, values in updates[:-1]:
            connection.execute(statement, values)
        return series_id

    before = tables_after(database, lambda connection: None)  # noqa: ARG005
    expected = tables_after(database, sqlalchemy_writes)
    assert expected != before
    assert tables_after(database, driver_writes) == expected
    # The delete (of the SR row a new SR replaces).
    name, statement, values = updates[-1]
    expected = tables_after(database, lambda connection: connection.execute(statement, values))
    assert tables_after(database, lambda connection: getattr(sql, name).execute(cursor_of(connection), values)) == (
        expected
    )
    assert len(expected["instances"]) == len(before["instances"]) - 1
