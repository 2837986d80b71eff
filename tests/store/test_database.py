"""Database errors never carry the values of the statement that failed (they end up in logs)."""

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
