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
