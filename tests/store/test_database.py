"""Database errors never carry the values of the statement that failed (they end up in logs); a dedicated writer's
transactions behave as `Database.begin()`'s."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from daemon.store.database import Database
from daemon.store.schema import patients


def test_a_failed_statement_does_not_show_its_values(database: Database) -> None:
    # Found by tests/reliability: the DICOM index committer logs a failed commit with its traceback, and the
    # error's text listed the INSERT's parameters (patient names and ids).
    row = {"patient_id": "SECRET-ID-4711", "issuer_of_patient_id": "", "patient_name": "DOE^SECRETNAME"}
    with database.begin() as connection:
        connection.execute(patients.insert().values(**row))
    with pytest.raises(sa.exc.IntegrityError) as raised:
        with database.begin() as connection:
            connection.execute(patients.insert().values(**row))
    text = str(raised.value)
    # (PostgreSQL's own DETAIL may quote the duplicate key itself: daemon/ops/logs.py keeps it out of logs.)
    assert "SECRETNAME" not in text and "SQL parameters hidden" in text


def test_a_dedicated_writer_keeps_its_connection_and_drops_it_after_a_failure(database: Database) -> None:
    writer = database.dedicated_writer()
    row = {"patient_id": "P1", "issuer_of_patient_id": "", "patient_name": "A^B"}
    try:
        with writer.begin() as first:
            first.execute(patients.insert().values(**row))
        with writer.begin() as second:
            assert second is first  # kept between transactions
            second.execute(patients.insert().values(**{**row, "patient_id": "P2"}))
        with pytest.raises(sa.exc.IntegrityError):
            with writer.begin() as connection:
                connection.execute(patients.insert().values(**{**row, "patient_id": "P3"}))
                connection.execute(patients.insert().values(**row))  # a duplicate: the whole transaction goes
        with writer.begin() as third:
            assert third is not first  # the failed transaction's connection was dropped
            third.execute(patients.insert().values(**{**row, "patient_id": "P4"}))
    finally:
        writer.close()
    with database.connect() as connection:
        ids = connection.execute(sa.select(patients.c.patient_id).order_by(patients.c.patient_id)).scalars().all()
    assert ids == ["P1", "P2", "P4"]


def test_a_dedicated_writer_gives_an_idle_connection_back_to_the_pool(database: Database) -> None:
    writer = database.dedicated_writer(idle_seconds=0.0)  # every connection counts as idle for long
    try:
        with writer.begin() as first:
            pass
        with writer.begin() as second:
            assert second is not first
            assert first.closed  # returned to the pool (whose checkout pings it on PostgreSQL)
    finally:
        writer.close()
