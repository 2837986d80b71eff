"""Property-based fuzzing (hypothesis) of MLLP framing and HL7 parsing, and of intake on both databases.

Framing: any stream of frames, cut into any chunks, with noise between frames, gives back exactly the
payloads (oversized ones as Oversize with their first bytes); arbitrary bytes never raise and never
make the decoder hold more than its limit.

Parsing: messages built from a grammar of HL7 segments (delimiters, escapes, odd encodings, separators),
mutations of real vendor messages, and raw bytes either parse or raise MessageProblem, nothing else. A
parsed message fits the database columns; every message, parsed or not, gets an acknowledgement that is
one well-formed ER7 message that cannot break the MLLP frame it travels in.

Intake: the same inputs through Intake.handle_batch on SQLite and PostgreSQL never raise, and every one
is answered and kept (or ignored, for an ACK).

CI runs a few thousand cases; NEUROLABEL_LONG=1 runs more than 100,000.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.hl7.ack import acknowledgement_codes, build_ack
from daemon.hl7.charsets import encode_reply
from daemon.hl7.codes import AckCode, Problem
from daemon.hl7.framing import CARRIAGE_RETURN, END_BLOCK, START_BLOCK, Discarded, Frame, MllpDecoder, Oversize, frame
from daemon.hl7.intake import IGNORED, Intake, Received, SenderPolicy
from daemon.hl7.parse import MessageProblem, ParseSettings, parse_message, peek_header
from daemon.store.database import Database
from daemon.store.schema import reports
from tests.hl7.messages import ERROR_CASES, VENDOR_CASES
from tests.reliability.conftest import Figures, scaled

FRAMING_CASES = scaled(1000, 40_000)
GRAMMAR_CASES = scaled(1000, 40_000)
MUTATION_CASES = scaled(700, 25_000)
RAW_CASES = scaled(300, 5_000)
INTAKE_CASES = scaled(150, 2_500)  # per database backend; each one a commit

SETTINGS = ParseSettings()
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)


def run(strategy: st.SearchStrategy, cases: int, check: Callable[..., None]) -> int:
    """Run `check` on `cases` examples of `strategy`; returns how many ran."""
    count = 0

    @settings(max_examples=cases, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(strategy)
    def property_(example: object) -> None:
        nonlocal count
        count += 1
        check(example)

    property_()
    return count


# --- framing ----------------------------------------------------------------------

payloads = st.binary(max_size=300).map(lambda b: b.replace(START_BLOCK, b"").replace(END_BLOCK, b""))
noise = st.sampled_from([b"", b"\r", b"\n", b"\r\n", b"\x00", b" \t"])


@st.composite
def framed_streams(draw: st.DrawFn) -> tuple[list[bytes], bytes, list[int], int]:
    messages = draw(st.lists(payloads, max_size=6))
    stream = b"".join(draw(noise) + frame(message) for message in messages) + draw(noise)
    cuts = sorted(draw(st.lists(st.integers(0, max(len(stream), 1)), max_size=8)))
    limit = draw(st.sampled_from([16, 64, 1000]))
    return messages, stream, cuts, limit


def chunks(stream: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in zip(edges, edges[1:])]


def decode(data: list[bytes], limit: int) -> list[object]:
    decoder = MllpDecoder(limit)
    events: list[object] = []
    for chunk in data:
        events += decoder.feed(chunk)
        # The decoder never holds more than its limit, whatever it is fed.
        assert len(decoder._buffer) <= limit  # noqa: SLF001
    return events + decoder.finish()


def check_roundtrip(example: tuple[list[bytes], bytes, list[int], int]) -> None:
    messages, stream, cuts, limit = example
    events = decode(chunks(stream, cuts), limit)
    # A frame that starts with a noise byte and "MSH"... is still a frame; nothing is discarded here.
    assert not [e for e in events if isinstance(e, Discarded)], events
    expected = [Frame(m) if len(m) <= limit else Oversize(m[:limit], len(m)) for m in messages]
    assert events == expected


def check_garbage(example: tuple[bytes, list[int], int]) -> None:
    stream, cuts, limit = example
    events = decode(chunks(stream, cuts), limit)
    for event in events:
        assert isinstance(event, (Frame, Oversize, Discarded))
        if isinstance(event, Frame):
            assert START_BLOCK not in event.payload and END_BLOCK not in event.payload
            assert len(event.payload) <= limit
    # Cutting the stream elsewhere changes nothing about the frames found.
    whole = [e for e in decode([stream], limit) if not isinstance(e, Discarded)]
    assert [e for e in events if not isinstance(e, Discarded)] == whole


mllp_bytes = st.lists(
    st.one_of(st.sampled_from([START_BLOCK, END_BLOCK, CARRIAGE_RETURN, b"MSH|", b"\n", b"\x00"]),
              st.binary(max_size=40)),
    max_size=30,
).map(b"".join)


@st.composite
def garbage_streams(draw: st.DrawFn) -> tuple[bytes, list[int], int]:
    stream = draw(mllp_bytes)
    cuts = sorted(draw(st.lists(st.integers(0, max(len(stream), 1)), max_size=8)))
    return stream, cuts, draw(st.sampled_from([8, 64, 4096]))


def test_mllp_framing_properties(figures: Figures) -> None:
    ran = run(framed_streams(), FRAMING_CASES // 2, check_roundtrip)
    ran += run(garbage_streams(), FRAMING_CASES // 2, check_garbage)
    figures.record(cases=ran)


# --- HL7 parsing ----------------------------------------------------------------------

SEGMENT_IDS = ["PID", "PV1", "ORC", "OBR", "OBX", "NTE", "TXA", "EVN", "ZDS", "ZXY", "MSA", "ERR",
               "obr", "obx", "MSH", "BHS"]
ALPHABET = list("ABCXYZabcxyz0123456789 .-/:_#'\"") + ["^", "~", "\\", "&", "|", "\t", "\x00", "\x0b", "\x1c",
                                                        "é", "Ω", "\u2013", "\ufeff"]
ESCAPES = ["\\F\\", "\\S\\", "\\T\\", "\\R\\", "\\E\\", "\\.br\\", "\\X41\\", "\\X1C\\", "\\X0B\\", "\\X0D0A\\",
           "\\XC3A9\\", "\\Z99\\", "\\H\\", "\\N\\", "\\", "\\X\\", "\\XZZ\\", "\\C2842\\", "\\M2442\\"]
field_value = st.one_of(st.text(alphabet=ALPHABET, max_size=10), st.sampled_from(ESCAPES))
UIDS = ["1.2.840.113619.2.55.3.1", "1." + "2" * 70, "1.2.abc", "", "../../etc/passwd"]


def random_field(rng: random.Random) -> str:
    pieces = []
    for _ in range(rng.randint(0, 4)):
        if rng.random() < 0.3:
            pieces.append(rng.choice(ESCAPES))
        else:
            pieces.append("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 10))))
    return "".join(pieces)


def random_segment(rng: random.Random, separator: str) -> str:
    """One segment of random fields; OBR and OBX often with the fields intake reads set to telling values.

    Drawn from a Random seeded by hypothesis: hundreds of fields drawn one by one from hypothesis cost
    ~30 ms a message, this well under 1 ms."""
    name = rng.choice(SEGMENT_IDS)
    fields = [random_field(rng) for _ in range(rng.randint(0, 26))]
    if name.upper() == "OBR" and rng.random() < 0.5:
        fields = (fields + [""] * 25)[:25]
        fields[2] = "A1" * rng.randint(30, 40) if rng.random() < 0.2 else random_field(rng)
        fields[24] = rng.choice(["F", "P", "C", "X", "Q", "", "f"])
    if name.upper() == "OBX" and rng.random() < 0.5:
        fields = (fields + [""] * 11)[:11]
        fields[1] = rng.choice(["TX", "FT", "ST", "CE", "HD", "NM", ""])
        fields[2] = rng.choice(["GDT^Report", "110180^Study Instance UID^DCM", ""])
        if fields[2].startswith("110180"):
            fields[4] = rng.choice(UIDS)
    return separator.join([name, *fields])


@st.composite
def grammar_messages(draw: st.DrawFn) -> bytes:
    separator = draw(st.sampled_from(["|", "|", "|", "#", "^"]))
    encoding = draw(st.sampled_from(["^~\\&", "^~\\&#", "^~\\", "", "^^^^", "^~\\\\&", "~^&\\"]))
    message_type = draw(st.sampled_from(["ORU^R01", "ORU^R01^ORU_R01", "MDM^T02", "ORU", "ORU_R01", "ADT^A01", "ACK",
                                         "ACK^R01^ACK", "", "oru^r01"]))
    control = draw(st.one_of(st.sampled_from(["", "MSG1", "X" * 200]), field_value))
    version = draw(st.sampled_from(["2.3", "2.4", "2.5.1", "2.7", "2.8", "", "3.0", "2.5\\X1C\\", "2.9"]))
    charset = draw(st.sampled_from(["", "UNICODE UTF-8", "8859/1", "ASCII", "ISO IR87", "bogus"]))
    modes = draw(st.sampled_from([("", ""), ("AL", "AL"), ("NE", "ER"), ("SU", "NE"), ("XX", "")]))
    msh = separator.join(["MSH", encoding, draw(field_value), draw(field_value), "NL", "NL", "20240305143000", "",
                          message_type, control, draw(st.sampled_from(["P", "T", "D", "", "Q"])), version, "", "",
                          modes[0], modes[1], "", charset])
    line = draw(st.sampled_from(["\r", "\n", "\r\n"]))
    rng = random.Random(draw(st.integers(0, 2**32)))
    body = [random_segment(rng, separator) for _ in range(rng.randint(0, 8))]
    text = line.join([msh, *body]) + draw(st.sampled_from(["", line]))
    codec = draw(st.sampled_from(["utf-8", "utf-8", "latin-1", "utf-16"]))
    return text.encode(codec, errors="replace")


SEEDS = [raw for raw, _ in VENDOR_CASES.values()] + [raw for raw, *_ in ERROR_CASES.values()]


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        operation = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate", "delimiter"]))
        position = draw(st.integers(0, len(data)))
        if operation == "flip" and position < len(data):
            data[position] = draw(st.integers(0, 255))
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "delete":
            del data[position:position + draw(st.integers(1, 32))]
        elif operation == "duplicate":
            data[position:position] = data[position:position + draw(st.integers(1, 200))]
        elif operation == "truncate":
            del data[position:]
        else:
            data[position:position] = draw(st.sampled_from([b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b"\\X1C\\"]))
    return bytes(data)


def column_limit(name: str) -> int:
    return int(reports.c[name].type.length)  # type: ignore[attr-defined]


def on_the_wire(raw: bytes) -> bytes:
    """What can arrive in an MLLP frame: the decoder never lets <VT> or <FS> into a payload."""
    return raw.replace(START_BLOCK, b"").replace(END_BLOCK, b"")


def check_message(raw: bytes) -> None:
    """Parse or MessageProblem; a parsed message fits the columns; every answer is a clean ER7 ACK."""
    raw = on_the_wire(raw)
    problem: Problem | None = None
    try:
        message = parse_message(raw, SETTINGS)
        header = message.header
    except MessageProblem as exc:
        header, problem, message = exc.header, exc.problem, None
    if message is not None:
        assert len(header.control_id) <= 199
        patient = message.patient
        if patient.primary is not None:
            assert len(patient.primary.value) <= column_limit("patient_id")
            assert len(patient.primary.authority) <= column_limit("issuer_of_patient_id")
        assert patient.name is None or len(patient.name) <= column_limit("patient_name")
        for report in message.reports:
            assert report.result_status in SETTINGS.result_statuses
            for name in ("accession_number", "study_instance_uid", "procedure", "modality"):
                value = getattr(report, name)
                assert value is None or len(value) <= column_limit(name), (name, value)
            for value in (report.text, report.accession_number or "", report.study_instance_uid or ""):
                assert "\x00" not in value  # PostgreSQL refuses NUL in text
    peek_header(raw, SETTINGS.default_charset)  # what oversized messages are answered from: never raises
    for code in acknowledgement_codes(header, problem):
        ack = build_ack(header, code, "NL1", NOW, problem)
        encoded = encode_reply(ack.text, header.codec if header else "ascii")
        assert START_BLOCK not in encoded and END_BLOCK not in encoded, encoded
        segments_ = ack.text.split("\r")
        assert segments_[0].startswith("MSH") and segments_[1].startswith("MSA")
        assert all(segment[:3].isalpha() for segment in segments_), segments_
        assert "\n" not in ack.text
        fields = segments_[1].split(header.delimiters.field if header else "|")
        assert fields[1] == code.value


def test_hl7_parser_properties(figures: Figures) -> None:
    ran = run(grammar_messages(), GRAMMAR_CASES, check_message)
    ran += run(mutated_messages(), MUTATION_CASES, check_message)
    ran += run(st.binary(max_size=600), RAW_CASES, check_message)
    figures.record(cases=ran)


# --- intake on both databases -------------------------------------------------------


@pytest.mark.slow
def test_intake_answers_and_keeps_every_input(database: Database, figures: Figures) -> None:
    intake = Intake(database, SETTINGS, SenderPolicy(), max_message_bytes=4096)
    counter = {"n": 0}

    def check(raw: bytes) -> None:
        counter["n"] += 1
        raw = on_the_wire(raw)
        oversize = len(raw) + 5000 if counter["n"] % 17 == 0 else None
        (handled,) = intake.handle_batch([Received(raw, "127.0.0.1:1", NOW, oversize=oversize)])
        if handled.outcome.status == IGNORED:
            assert handled.outcome.header is not None and handled.outcome.header.message_code == "ACK"
            return
        assert handled.outcome.status in ("accepted", "duplicate", "rejected"), handled.outcome
        assert handled.outcome.message_id is not None
        assert handled.acks or handled.outcome.header is not None and handled.outcome.header.enhanced_mode
        if handled.outcome.status == "rejected":
            assert AckCode.APPLICATION_ACCEPT not in handled.ack_codes
        for ack in handled.acks:
            assert START_BLOCK not in ack and END_BLOCK not in ack

    inputs = st.one_of(grammar_messages(), mutated_messages())
    ran = run(inputs, INTAKE_CASES, check)
    figures.record(cases=ran, backend=database.dialect)
