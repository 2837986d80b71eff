"""Log formats: text for people, one JSON object a line for shippers."""

from __future__ import annotations

import json
import logging

import pytest

from daemon.ops.logs import configure_logging


def test_json_format_carries_extra_ids(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    logging.getLogger("neurolabel.hl7").info("accepted %s", "MSG0001", extra={"accession": "ACC1", "ms": 1.5})
    entry = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert entry["logger"] == "neurolabel.hl7"
    assert entry["message"] == "accepted MSG0001"
    assert entry["accession"] == "ACC1" and entry["ms"] == 1.5
    assert entry["level"] == "INFO" and entry["time"].endswith("+00:00")


def test_text_format_and_level(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING", "text")
    logging.getLogger("neurolabel.dicom").info("hidden")
    logging.getLogger("neurolabel.dicom").warning("shown")
    err = capsys.readouterr().err
    assert "hidden" not in err and "WARNING neurolabel.dicom: shown" in err


def test_pynetdicom_debug_is_silenced() -> None:
    configure_logging("DEBUG", "text")
    assert not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_database_errors_are_logged_without_their_text(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    # Found by tests/reliability: a failed index commit was logged with its traceback, whose text can carry
    # the statement's values (patient names and ids; PostgreSQL's DETAIL quotes duplicate key values).
    import sqlalchemy as sa

    configure_logging("INFO", fmt)
    engine = sa.create_engine("sqlite://")
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (name TEXT UNIQUE)")
            connection.exec_driver_sql("INSERT INTO t VALUES (?)", ("DOE^SECRETNAME",))
            connection.exec_driver_sql("INSERT INTO t VALUES (?)", ("DOE^SECRETNAME",))
    except sa.exc.IntegrityError:
        logging.getLogger("neurolabel.dicom.index").exception("index commit failed")
    err = capsys.readouterr().err
    assert "SECRETNAME" not in err and "Traceback" not in err
    assert "index commit failed [IntegrityError (IntegrityError) at" in err


def test_other_errors_keep_their_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "text")
    try:
        raise ValueError("a bug")
    except ValueError:
        logging.getLogger("neurolabel.work").exception("handler failed")
    assert "Traceback" in capsys.readouterr().err
