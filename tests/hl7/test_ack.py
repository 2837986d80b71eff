"""Acknowledgements: MSH-15/16 modes, codes, ERR segments; every ACK validated by hl7apy."""

from __future__ import annotations

import datetime as dt

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message as hl7apy_parse_message

from daemon.hl7.ack import acknowledgement_codes, build_ack
from daemon.hl7.codes import AckCode, ErrorCode, Location, Problem
from daemon.hl7.parse import MessageProblem, ParseSettings, parse_message
from tests.hl7.messages import oru

NOW = dt.datetime(2024, 3, 5, 14, 30, tzinfo=dt.timezone.utc)
CONTENT_ERROR = Problem(ErrorCode.REQUIRED_FIELD_MISSING, "no report text", Location("OBX", 1, 5))
REJECTION = Problem(
    ErrorCode.UNSUPPORTED_MESSAGE_TYPE, "message type ADT not accepted", Location("MSH", 1, 9, 1), reject=True
)
INTERNAL = Problem(ErrorCode.APPLICATION_INTERNAL_ERROR, "database unavailable", reject=True)


def _header(accept: str = "", application: str = "", version: str = "2.5.1"):  # type: ignore[no-untyped-def]
    return parse_message(oru("C1", version=version, ack_modes=(accept, application)).encode(), ParseSettings()).header


@pytest.mark.parametrize(
    ("modes", "problem", "expected"),
    [
        (("", ""), None, ["AA"]),
        (("", ""), CONTENT_ERROR, ["AE"]),
        (("", ""), REJECTION, ["AR"]),
        (("", ""), INTERNAL, ["AR"]),
        (("AL", "AL"), None, ["CA", "AA"]),
        (("AL", "AL"), CONTENT_ERROR, ["CA", "AE"]),
        (("AL", "AL"), REJECTION, ["CR", "AR"]),
        (("AL", "AL"), INTERNAL, ["CE", "AR"]),
        (("AL", "NE"), None, ["CA"]),
        (("AL", ""), CONTENT_ERROR, ["CA"]),
        (("NE", "AL"), None, ["AA"]),
        (("NE", "NE"), CONTENT_ERROR, []),
        (("ER", "ER"), None, []),
        (("ER", "ER"), CONTENT_ERROR, ["AE"]),
        (("ER", "ER"), REJECTION, ["CR", "AR"]),
        (("SU", "SU"), None, ["CA", "AA"]),
        (("SU", "SU"), CONTENT_ERROR, ["CA"]),
        (("SU", "ER"), REJECTION, ["AR"]),
    ],
)
def test_acknowledgement_modes(modes: tuple[str, str], problem: Problem | None, expected: list[str]) -> None:
    assert [code.value for code in acknowledgement_codes(_header(*modes), problem)] == expected


def test_unreadable_header_gets_an_original_mode_reply() -> None:
    assert acknowledgement_codes(None, REJECTION) == [AckCode.APPLICATION_REJECT]


@pytest.mark.parametrize("version", ["2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8"])
@pytest.mark.parametrize("problem", [None, CONTENT_ERROR, REJECTION])
def test_acks_are_valid_hl7(version: str, problem: Problem | None) -> None:
    header = _header(version=version)
    code = acknowledgement_codes(header, problem)[0]
    ack = build_ack(header, code, "NL42", NOW, problem)
    parsed = hl7apy_parse_message(ack.text, validation_level=VALIDATION_LEVEL.STRICT)
    assert parsed.validate()
    assert parsed.msa.msa_1.value == code.value
    assert parsed.msa.msa_2.value == "C1"
    assert parsed.msh.msh_5.to_er7() == "RIS" and parsed.msh.msh_6.to_er7() == "HOSPITAL"
    assert parsed.msh.msh_12.to_er7() == version
    if problem is not None and version == "2.4":
        assert parsed.err.err_1.to_er7().split("^")[3].startswith(problem.code.value + "&")
    elif problem is not None:
        assert parsed.err.err_3.to_er7().startswith(problem.code.value + "^")
        assert parsed.err.err_4.to_er7() == "E"


def test_pre_25_acks_use_err_1() -> None:
    header = _header(version="2.3")
    ack = build_ack(header, AckCode.APPLICATION_ERROR, "NL1", NOW, CONTENT_ERROR)
    segments = ack.text.split("\r")
    assert segments[0].split("|")[8] == "ACK^R01"
    assert segments[1] == "MSA|AE|C1|no report text"
    assert segments[2] == "ERR|OBX^1^5^101&Required field missing&HL70357"
    parsed = hl7apy_parse_message(ack.text, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)
    assert parsed.msa.msa_1.value == "AE"


def test_ack_uses_the_senders_delimiters_and_charset() -> None:
    text = oru("D1").replace("MSH|^~\\&|", "MSH#$%@!#", 1).replace("|", "#").replace("^", "$")
    header = parse_message((text.rstrip("\r") + "\r").replace("##########UNICODE", "").encode(), ParseSettings()).header
    ack = build_ack(
        header,
        AckCode.APPLICATION_ERROR,
        "NL2",
        NOW,
        Problem(ErrorCode.DATA_TYPE_ERROR, "a#b$c", Location("OBR", 1, 3)),
    )
    assert ack.text.startswith("MSH#$%@!#")
    assert "a@F@b@S@c" in ack.text  # escaped with the sender's escape character


def test_enhanced_application_ack_asks_for_nothing_back() -> None:
    ack = build_ack(_header("AL", "AL"), AckCode.APPLICATION_ACCEPT, "NL3", NOW)
    msh = ack.text.split("\r")[0].split("|")
    assert msh[14] == "NE" and msh[15] == "NE"


@pytest.mark.parametrize("field", [9, 11, 12])
def test_escaped_control_characters_in_echoed_fields_stay_escaped(field: int) -> None:
    # \X0D0A\ (CR LF) or \X1C\ (<FS>) in MSH-9.2, -11 or -12 is unescaped when read; echoed raw it would
    # split the ACK's segments or end its MLLP frame early (found by tests/reliability/test_hl7_fuzz.py).
    fields = oru("C1").split("\r")[0].split("|")
    injected = "\\X0D0A\\\\X1C\\\\X0B\\"
    fields[field - 1] = "ORU^R01" + injected if field == 9 else fields[field - 1] + injected
    raw = "\r".join(["|".join(fields), *oru("C1").split("\r")[1:]]).encode()
    try:
        header = parse_message(raw, ParseSettings()).header
        problem = None
    except MessageProblem as exc:
        header, problem = exc.header, exc.problem
    assert header is not None
    for code in acknowledgement_codes(header, problem):
        text = build_ack(header, code, "NL1", NOW, problem).text
        assert not set(text) & {"\n", "\x1c", "\x0b"}
        assert [segment[:3] for segment in text.split("\r")] in (["MSH", "MSA"], ["MSH", "MSA", "ERR"])


def test_version_with_a_superscript_digit_is_acknowledged() -> None:
    # "\xb2" (latin-1 superscript two) passes str.isdigit() but not int(): building the ACK raised, so the
    # message was never answered (found by tests/reliability/atheris_targets.py).
    raw = oru("V1").replace("|2.5.1", "|\xb2.5.1", 1).encode("latin-1")
    with pytest.raises(MessageProblem) as refused:
        parse_message(raw, ParseSettings())
    header, problem = refused.value.header, refused.value.problem
    (code,) = acknowledgement_codes(header, problem)
    assert "MSA|AR|V1" in build_ack(header, code, "NL1", NOW, problem).text
