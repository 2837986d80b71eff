"""Reading historic reports for `neurolabel backfill`: JSON Lines, CSV, or a file of HL7 v2 messages.

Pure readers: each yields, in file order, a `BackfillReport` per report (or a `NotAReport` for an HL7
message that carries none: an order status, a cancellation) and raises `BackfillInputError` naming the
file and line of the first problem. Report text and patient data never appear in a repr or an error.

- JSONL: the report file format of ARCHITECTURE.md (`id`, `text`; `labels` and `image_labels` are
  ignored), plus optional `accession_number`, `study_instance_uid`, `patient_id`, `study_date`
  (YYYY-MM-DD or YYYYMMDD);
- CSV: a header row naming the columns; `id` and `text` required, the optional ones as for JSONL,
  other columns ignored;
- HL7: ORU^R01 / MDM messages as the listener accepts them (`[hl7]` settings), framed by MLLP or one
  after another with \\r or \\n between segments; each message starts at its MSH segment. Batch
  envelopes (FHS, BHS, BTS, FTS) are skipped. One report per order; its id is MSH-10 (with `#n` for
  the n-th order of a message that has several).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from daemon.hl7.parse import CANCELLED, MessageProblem, ParseSettings, parse_message

FORMATS = ("jsonl", "csv", "hl7")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".hl7": "hl7", ".txt": "hl7"}
OPTIONAL_FIELDS = ("accession_number", "study_instance_uid", "patient_id", "study_date")
# Column widths of the reports table (daemon/store/schema.py).
MAX_LENGTHS = {"id": 199, "accession_number": 64, "study_instance_uid": 64, "patient_id": 64}
_BATCH_SEGMENTS = (b"FHS", b"BHS", b"BTS", b"FTS")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


class BackfillInputError(ValueError):
    """The input file cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class BackfillReport:
    external_id: str
    text: str = field(repr=False)
    line: int
    accession_number: str | None = None
    study_instance_uid: str | None = None
    patient_id: str | None = field(default=None, repr=False)
    issuer_of_patient_id: str | None = field(default=None, repr=False)
    patient_name: str | None = field(default=None, repr=False)
    patient_identifiers: tuple[dict[str, str], ...] = field(default=(), repr=False)
    observation_time: dt.datetime | None = None
    modality: str | None = None
    procedure: str | None = None
    result_status: str = "F"


@dataclass(frozen=True)
class NotAReport:
    """An HL7 message read correctly that carries no report to label."""

    external_id: str
    line: int
    reason: str


Record = BackfillReport | NotAReport


def detect_format(path: Path, explicit: str | None) -> str:
    if explicit:
        return explicit
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise BackfillInputError(f"{path}: cannot tell the format from the name; give --format jsonl, csv or hl7")
    return found


def read_records(path: Path, fmt: str, hl7_settings: ParseSettings) -> Iterator[Record]:
    """Every record of the file, in order (duplicate ids are an error)."""
    readers = {"jsonl": _jsonl, "csv": _csv, "hl7": lambda p: _hl7(p, hl7_settings)}
    if fmt not in readers:
        raise BackfillInputError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    seen: dict[str, int] = {}
    for record in readers[fmt](path):
        earlier = seen.setdefault(record.external_id, record.line)
        if earlier != record.line:
            raise BackfillInputError(f"{path}:{record.line}: id {record.external_id!r} already used on line {earlier}")
        yield record


# --- JSON Lines and CSV -------------------------------------------------------------------


def _jsonl(path: Path) -> Iterator[Record]:
    with _open_text(path) as handle:
        for number, line in enumerate(_lines(path, handle), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BackfillInputError(f"{path}:{number}: not JSON ({exc.msg})") from None
            if not isinstance(item, dict):
                raise BackfillInputError(f"{path}:{number}: expected a JSON object with 'id' and 'text'")
            yield _from_fields(path, number, item)


def _csv(path: Path) -> Iterator[Record]:
    with _open_text(path, newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            columns = reader.fieldnames or []
        except (csv.Error, UnicodeDecodeError) as exc:
            raise BackfillInputError(f"{path}:1: cannot read the header row ({exc})") from None
        missing = [name for name in ("id", "text") if name not in columns]
        if missing:
            raise BackfillInputError(
                f"{path}:1: the header row needs the columns id and text (missing: {', '.join(missing)})"
            )
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                raise BackfillInputError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
            if None in row:
                raise BackfillInputError(f"{path}:{reader.line_num}: more fields than the header has columns")
            yield _from_fields(path, reader.line_num, {k: v for k, v in row.items() if v != ""})


def _from_fields(path: Path, number: int, item: dict[str, object]) -> BackfillReport:
    where = f"{path}:{number}"
    if "id" not in item or item["id"] is None or isinstance(item["id"], (dict, list)):
        raise BackfillInputError(f"{where}: no 'id'")
    if not isinstance(item.get("text"), str):
        raise BackfillInputError(f"{where}: 'text' must be a string")
    external_id = str(item["id"]).strip()
    values: dict[str, str | None] = {"id": external_id}
    for key in OPTIONAL_FIELDS:
        value = item.get(key)
        if value is not None and not isinstance(value, (str, int)):
            raise BackfillInputError(f"{where}: '{key}' must be a string")
        text = str(value).strip() if value is not None else ""
        values[key] = text or None
    if not external_id:
        raise BackfillInputError(f"{where}: 'id' is empty")
    for key, limit in MAX_LENGTHS.items():
        value = values.get(key)
        if value is not None and len(value) > limit:
            raise BackfillInputError(f"{where}: '{key}' is longer than {limit} characters")
    return BackfillReport(
        external_id=external_id,
        text=str(item["text"]),
        line=number,
        accession_number=values["accession_number"],
        study_instance_uid=values["study_instance_uid"],
        patient_id=values["patient_id"],
        observation_time=_study_date(where, values["study_date"]),
    )


def _study_date(where: str, value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    for pattern in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(value, pattern).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            continue
    raise BackfillInputError(f"{where}: 'study_date' {value!r} is not a date (YYYY-MM-DD or YYYYMMDD)")


def _open_text(path: Path, newline: str | None = None) -> io.TextIOWrapper:
    try:
        return open(path, encoding="utf-8-sig", newline=newline)
    except OSError as exc:
        raise BackfillInputError(f"cannot read {path}: {exc.strerror or exc}") from None


def _lines(path: Path, handle: io.TextIOWrapper) -> Iterator[str]:
    number = 0
    try:
        for number, line in enumerate(handle, start=1):  # noqa: B007 - used in the error below
            yield line
    except UnicodeDecodeError:
        raise BackfillInputError(f"{path}:{number + 1}: not UTF-8 text") from None


# --- HL7 messages ----------------------------------------------------------------------------


def split_messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(line of its MSH, message with \\r between segments) for each message; MLLP framing optional."""
    current: list[bytes] = []
    start = 0
    for number, raw_line in enumerate(_LINE_BREAK.split(data), start=1):
        line = raw_line.strip(b"\x0b\x1c \t")
        if not line or line[:3] in _BATCH_SEGMENTS:
            continue
        if line.startswith(b"MSH") and len(line) > 3:
            if current:
                yield start, b"\r".join(current) + b"\r"
            current, start = [line], number
        elif not current:
            raise BackfillInputError(f"line {number}: expected an MSH segment to start a message")
        else:
            current.append(line)
    if current:
        yield start, b"\r".join(current) + b"\r"


def _hl7(path: Path, settings: ParseSettings) -> Iterator[Record]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BackfillInputError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        for number, raw in split_messages(data):
            yield from _hl7_records(path, number, raw, settings)
    except BackfillInputError as exc:
        if str(exc).startswith("line "):
            raise BackfillInputError(f"{path}:{str(exc)[5:]}") from None
        raise


def _hl7_records(path: Path, number: int, raw: bytes, settings: ParseSettings) -> Iterator[Record]:
    try:
        message = parse_message(raw, settings)
    except MessageProblem as exc:
        control = f" (MSH-10 {exc.header.control_id})" if exc.header is not None and exc.header.control_id else ""
        problem = exc.problem.describe()
        raise BackfillInputError(f"{path}:{number}: message{control} cannot be read: {problem}") from None
    header = message.header
    control_id = header.control_id.strip()
    if not control_id:
        raise BackfillInputError(f"{path}:{number}: message without MSH-10 (message control id)")
    if not message.reports:
        yield NotAReport(control_id, number, f"no report (result status {message.status_only or 'none'})")
        return
    patient = message.patient
    primary = patient.primary
    identifiers = tuple({"id": i.value, "authority": i.authority, "type": i.type_code} for i in patient.identifiers)
    several = len(message.reports) > 1
    for index, report in enumerate(message.reports, start=1):
        external_id = f"{control_id}#{index}" if several else control_id
        if len(external_id) > MAX_LENGTHS["id"]:
            raise BackfillInputError(f"{path}:{number}: MSH-10 is longer than {MAX_LENGTHS['id']} characters")
        if report.result_status == CANCELLED:
            yield NotAReport(external_id, number, "cancellation (result status X)")
            continue
        yield BackfillReport(
            external_id=external_id,
            text=report.text,
            line=number,
            accession_number=report.accession_number,
            study_instance_uid=report.study_instance_uid,
            patient_id=primary.value if primary else None,
            issuer_of_patient_id=(primary.authority or None) if primary else None,
            patient_name=patient.name,
            patient_identifiers=identifiers,
            observation_time=report.observation_time,
            modality=report.modality,
            procedure=report.procedure,
            result_status=report.result_status,
        )
