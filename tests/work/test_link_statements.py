"""Linking's and the sidecar's statements, run as driver statements (daemon/store/driver_cache.py), read and write
what SQLAlchemy's execution of the same statements does, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from daemon.store import driver_cache
from daemon.store.database import Database
from daemon.store.schema import report_link_states, report_links, study_labels, study_link_states
from daemon.work import link_jobs, sidecar
from tests.work.rows import add_prediction, add_report, add_study, labels_of

UID = "1.2.826.0.1.3680043.8.498.7"
NOW = dt.datetime(2026, 11, 27, 1, 2, 3, 456789, tzinfo=dt.timezone.utc)


class _Rollback(Exception):
    pass


def populated(database: Database) -> dict[str, int]:
    """A linked, labelled study, another report linked to it and one waiting."""
    add_study(database, UID, accession="ACC1")
    add_study(database, "9.9.9", accession="OTHER", patient_id="P2")
    first = add_report(database, accession="ACC1", study_uid=UID)
    second = add_report(database, accession="ACC1")
    waiting = add_report(database, accession="NONE", patient_id="P3")
    prediction = add_prediction(database, first, labels_of(mass=1))
    add_prediction(database, second)
    with database.begin() as connection:
        for report in (first, second):
            connection.execute(
                report_links.insert().values(report_id=report, study_instance_uid=UID, method="uid", linked_at=NOW)
            )
        connection.execute(
            study_labels.insert().values(
                study_instance_uid=UID, accession_number="ACC1", report_id=first, prediction_id=prediction,
                labels=labels_of(mass=1), probabilities={"mass": 0.9}, model="m:1", labelled_at=NOW, current=True,
            )
        )
        connection.execute(
            study_link_states.insert().values(study_instance_uid=UID, state="linked", changed_at=NOW)
        )
    return {"first": first, "second": second, "waiting": waiting, "prediction": prediction}


def reads(ids: dict[str, int]) -> list[tuple[sa.Select[Any], dict[str, Any]]]:
    cases: list[tuple[sa.Select[Any], dict[str, Any]]] = [
        (link_jobs._REPORT, {"report_id": ids["first"]}),
        (link_jobs._REPORT, {"report_id": 999}),
        (link_jobs._STUDY_STATE, {"uid": UID}),
        (sidecar._LOCK_STUDY, {"uid": UID}),
        (sidecar._CURRENT_LABELS, {"uid": UID}),
        (sidecar._LABEL_SOURCES, {"uid": UID}),
        (sidecar._PREDICTION, {"prediction_id": ids["prediction"]}),
        (sidecar._REPORT_ACCESSION, {"report_id": ids["second"]}),
        (sidecar._LINKED_STUDIES, {"report_id": ids["first"]}),
        (sidecar._ACTIVE_LINK, {"uid": UID}),
        (sidecar._ACTIVE_LINK, {"uid": "9.9.9"}),
    ]
    for statement in link_jobs._CANDIDATES.values():
        for report in ("first", "second", "waiting"):
            cases.append((statement, {"report_id": ids[report], "uid": UID, "accession": "ACC1", "patient": "P1"}))
    return cases


def test_reads_are_sqlalchemys(database: Database) -> None:
    ids = populated(database)
    with database.begin() as connection:
        for statement, values in reads(ids):
            expected = connection.execute(statement, values).all()
            got = driver_cache.rows(connection, statement, values)
            assert [tuple(row) for row in got] == [tuple(row) for row in expected], statement
            assert [row._fields for row in got] == [tuple(row._fields) for row in expected]
        assert driver_cache.scalar(connection, link_jobs._STUDY_STATE, {"uid": UID}) == "linked"
        assert driver_cache.scalar(connection, link_jobs._STUDY_STATE, {"uid": "0.0"}) is None
        # One compiled form per statement on this connection, reused.
        cache = connection.info["neurolabel.driver_statements"]
        size = len(cache)
        driver_cache.rows(connection, sidecar._LOCK_STUDY, {"uid": UID})
        assert len(cache) == size


def table_rows(connection: Connection) -> dict[str, list[dict[str, Any]]]:
    return {
        table.name: [
            {key: value for key, value in row._mapping.items() if key != "id"}
            for row in connection.execute(sa.select(table).order_by(*table.primary_key.columns)).all()
        ]
        for table in (report_links, report_link_states, study_link_states, study_labels)
    }


def test_writes_are_sqlalchemys(database: Database) -> None:
    ids = populated(database)
    after: dict[str, Any] = {}
    for side in ("sqlalchemy", "driver"):
        try:
            with database.begin() as connection:
                link = {"report_id": ids["waiting"], "study_instance_uid": "9.9.9", "method": "fallback",
                        "linked_at": NOW}
                state = {"report_id": ids["waiting"], "state": "linked", "checked_at": NOW, "changed_at": NOW,
                         "reason": "by accession"}
                update_report = {"report": ids["waiting"], "new_state": "parked", "at": NOW, "why": "again"}
                update_study = {"uid": UID, "state": "waiting", "changed_at": NOW, "waiting_since": NOW}
                label = {"study_instance_uid": "9.9.9", "accession_number": None, "report_id": ids["waiting"],
                         "prediction_id": ids["prediction"], "labels": {"mass": 1}, "probabilities": {"mass": 0.75},
                         "model": "m:2", "labelled_at": NOW, "current": True}
                if side == "driver":
                    driver_cache.execute(connection, link_jobs._INSERT_LINK, link)
                    driver_cache.execute(connection, link_jobs._INSERT_REPORT_STATE, state)
                    matched = driver_cache.execute(connection, link_jobs._UPDATE_REPORT_STATE, update_report)
                    driver_cache.execute(connection, link_jobs._UPDATE_STUDY_STATE, update_study)
                    label_id = driver_cache.insert(connection, study_labels, label)
                else:
                    connection.execute(link_jobs._INSERT_LINK, link)
                    connection.execute(link_jobs._INSERT_REPORT_STATE, state)
                    matched = connection.execute(link_jobs._UPDATE_REPORT_STATE, update_report).rowcount
                    connection.execute(link_jobs._UPDATE_STUDY_STATE, update_study)
                    label_id = connection.execute(study_labels.insert(), label).inserted_primary_key[0]
                assert matched == 1
                assert connection.execute(
                    sa.select(study_labels.c.model).where(study_labels.c.id == label_id)
                ).scalar_one() == "m:2"
                after[side] = table_rows(connection)
                raise _Rollback
        except _Rollback:
            pass
    assert after["driver"] == after["sqlalchemy"]
    assert after["driver"]["report_links"] and after["driver"]["study_labels"][-1]["model"] == "m:2"
