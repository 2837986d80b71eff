"""HL7 message -> Report: a table of vendor habits, refusals with their HL7 error, and hl7apy as the oracle."""

from __future__ import annotations

import datetime as dt

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message as hl7apy_parse_message
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.hl7.parse import (
    FieldRef,
    MessageProblem,
    ParseSettings,
    delimiters_of,
    parse_message,
    parse_timestamp,
    split_segments,
)
from tests.hl7.messages import ERROR_CASES, VENDOR_CASES, oru

SETTINGS = ParseSettings()


@pytest.mark.parametrize("name", sorted(VENDOR_CASES))
def test_vendor_habits_are_read(name: str) -> None:
    raw, expected = VENDOR_CASES[name]
    message = parse_message(raw, SETTINGS)
    report = message.reports[0]
    checks = {
        "accession": lambda: report.accession_number,
        "status": lambda: report.result_status,
        "lines": lambda: len(report.text.splitlines()),
        "version": lambda: message.header.version,
        "patient_id": lambda: message.patient.primary.value if message.patient.primary else None,
        "issuer": lambda: message.patient.primary.authority if message.patient.primary else None,
        "identifiers": lambda: len(message.patient.identifiers),
        "text": lambda: report.text,
        "codec": lambda: message.header.codec,
        "study_uid": lambda: report.study_instance_uid,
        "reports": lambda: len(message.reports),
        "warning": lambda: bool(message.warnings),
    }
    for key, value in expected.items():
        assert checks[key]() == value, f"{name}: {key}"


@pytest.mark.parametrize("name", sorted(ERROR_CASES))
def test_refusals_name_the_hl7_error_and_field(name: str) -> None:
    raw, ack, code, location = ERROR_CASES[name]
    with pytest.raises(MessageProblem) as caught:
        parse_message(raw, SETTINGS)
    problem = caught.value.problem
    assert problem.code.value == code
    assert problem.reject is (ack == "AR")
    where = problem.location
    assert where is not None
    assert f"{where.segment}" + (f"-{where.field}" if where.field else "") == location


def test_header_is_kept_for_the_acknowledgement_of_a_refused_message() -> None:
    raw, *_ = ERROR_CASES["unsupported message type"]
    with pytest.raises(MessageProblem) as caught:
        parse_message(raw, SETTINGS)
    assert caught.value.header is not None
    assert caught.value.header.control_id == "E1"


def test_report_fields() -> None:
    message = parse_message(oru("F1", extra_segments=["ZDS|1.2.3.4^RIS^Application^DICOM"]).encode(), SETTINGS)
    (report,) = message.reports
    assert report.procedure == "MRI head without contrast"
    assert report.modality == "MR"
    assert report.observation_time == dt.datetime(2024, 3, 5, 12, 0).astimezone()
    assert report.accession_field == "OBR-3"
    assert message.header.sending_application == "RIS"
    assert message.header.sending_facility == "HOSPITAL"
    assert message.patient.name == "DOE^JANE^Q"


def test_accession_fields_are_searched_in_configured_order() -> None:
    raw = oru("ORD1", accession="").encode()  # OBR-3 empty, OBR-2 holds the placer number
    assert parse_message(raw, SETTINGS).reports[0].accession_number == "PLC998"
    settings = ParseSettings.build(["ORU^R01"], ["OBR-18", "ORC-3"], "ASCII")
    assert parse_message(oru("ORD2", accession="ORCACC").encode(), settings).reports[0].accession_number == "ORCACC"


def test_status_only_results_carry_no_report() -> None:
    message = parse_message(oru("S1", status="S", lines=()).encode(), SETTINGS)
    assert message.reports == ()
    assert message.status_only == "S"


def test_repr_never_shows_report_text_or_patient_identity() -> None:
    message = parse_message(oru("R1", lines=("SECRET FINDING",)).encode(), SETTINGS)
    shown = repr(message)
    assert "SECRET FINDING" not in shown
    assert "MRN12345" not in shown and "DOE" not in shown


def test_content_hash_ignores_the_header() -> None:
    first = parse_message(oru("H1").encode(), SETTINGS)
    resent = parse_message(oru("H1").replace("20240305143000", "20240305150000", 1).encode(), SETTINGS)
    changed = parse_message(oru("H1", lines=("other",)).encode(), SETTINGS)
    assert first.content_hash == resent.content_hash != changed.content_hash


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20240305", dt.datetime(2024, 3, 5).astimezone()),
        ("202403051430", dt.datetime(2024, 3, 5, 14, 30).astimezone()),
        ("20240305143015.123+0100", dt.datetime(2024, 3, 5, 14, 30, 15, 123000, dt.timezone(dt.timedelta(hours=1)))),
        ("20240305143015-0500", dt.datetime(2024, 3, 5, 14, 30, 15, tzinfo=dt.timezone(dt.timedelta(hours=-5)))),
        ("", None),
        ("yesterday", None),
        ("20241340", None),
        ("00010101000000+2359", dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=23, minutes=59)))),
    ],
)
def test_timestamps(text: str, expected: dt.datetime | None) -> None:
    assert parse_timestamp(text) == expected


def test_a_timestamp_at_the_edge_of_the_calendar_is_read_or_ignored() -> None:
    # "0001" raised "year 0 is out of range" converting to local time (found by tests/reliability/atheris_targets.py)
    for text in ("0001", "00010101", "9999123123595999"):
        moment = parse_timestamp(text)
        assert moment is None or moment.tzinfo is not None



def test_segments_tolerate_separators_and_continuation_lines() -> None:
    text = "MSH|^~\\&|A\r\nPID|1\n\nOBX|1|TX|||line one\nline two||||||F\rOBX|2|TX|||x"
    assert split_segments(text, "|") == [
        "MSH|^~\\&|A",
        "PID|1",
        "OBX|1|TX|||line one\nline two||||||F",
        "OBX|2|TX|||x",
    ]


def test_the_msh_never_takes_a_continuation_line() -> None:
    # With "^" declared as field separator, "PID|..." does not start a segment; glued onto the MSH as a
    # continuation line it put line breaks into MSH-10 and the other fields the ACK echoes (found by
    # tests/reliability/test_hl7_fuzz.py).
    raw = b"MSH^~\\&|^RIS^HOSP^NL^NL^20240305143000^^ORU~R01^C1^P^2.5\rPID|1||MRN1||DOE^JANE\rOBX|1|TX|||x\r"
    try:
        header = parse_message(raw, SETTINGS).header
    except MessageProblem as exc:
        header = exc.header
    assert header is not None and header.control_id == "C1"
    assert not [value for value in vars(header).values() if isinstance(value, str) and "\n" in value]
    assert split_segments("MSH|^~\\&|A\nnot a segment\nOBX|1|TX|||x\nmore", "|") == [
        "MSH|^~\\&|A", "not a segment", "OBX|1|TX|||x\nmore",
    ]


@pytest.mark.parametrize(
    ("msh", "expected"),
    [
        ("MSH|^~\\&|X", "^~\\&"),
        ("MSH|^~\\\\&|X", "^~\\&"),  # over-escaped
        ("MSH|^~\\|X", "^~\\&"),  # subcomponent separator missing
        ("MSH#$%@!#X", "$%@!"),
    ],
)
def test_delimiters_are_repaired(msh: str, expected: str) -> None:
    assert delimiters_of(msh).encoding_characters == expected


def test_field_references() -> None:
    assert FieldRef.parse("obr-18.2") == FieldRef("OBR", 18, 2)
    assert str(FieldRef.parse("OBR-3")) == "OBR-3"
    with pytest.raises(ValueError):
        FieldRef.parse("OBR3")


def _oracle(raw: bytes) -> object | None:
    text = raw.decode("latin-1").replace("\r\n", "\r").replace("\n", "\r")
    try:
        return hl7apy_parse_message(text, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)
    except Exception:
        return None


def test_fields_agree_with_hl7apy() -> None:
    """hl7apy, the reference parser, reads the same control id, accession, status and patient id."""
    compared = 0
    for name, (raw, _expected) in VENDOR_CASES.items():
        reference = _oracle(raw)
        if reference is None:
            continue
        ours = parse_message(raw, SETTINGS)
        assert reference.msh.msh_10.value == ours.header.control_id, name
        assert reference.msh.msh_12.to_er7().split("^")[0] == ours.header.version, name
        obrs = reference.children.get("OBR") if hasattr(reference.children, "get") else None
        obr = [s for s in reference.children if s.name == "OBR"]
        if obr and ours.reports:
            accession = obr[0].obr_3.to_er7().split("^")[0]
            if accession:
                assert accession == ours.reports[0].accession_number, name
            status = obr[0].obr_25.to_er7()
            if status:
                assert status.upper() == ours.reports[0].result_status or status in "RA", name
        pid = [s for s in reference.children if s.name == "PID"]
        if pid and ours.patient.identifiers:
            first = pid[0].pid_3.to_er7().split("~")[0].split("^")[0]
            assert first == ours.patient.identifiers[0].value, name
        del obrs
        compared += 1
    assert compared >= 15


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_parser(raw: bytes) -> None:
    try:
        parse_message(raw, SETTINGS)
    except MessageProblem:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("|^~\\&\r\nABCOXPRF0123.- ")), max_size=300))
def test_hl7_like_text_never_crashes_the_parser(body: str) -> None:
    try:
        parse_message(("MSH|^~\\&|" + body).encode(), SETTINGS)
        parse_message((oru("FZ") + "OBX|" + body).encode(), SETTINGS)
    except MessageProblem:
        pass
