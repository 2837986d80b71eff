"""HL7 v2 ORU^R01 / MDM^T02 (versions 2.3 to 2.8) -> Header, Patient and Reports. Pure functions.

Liberal in what it reads: `\\n` or `\\r\\n` segment separators, report lines
broken by raw line feeds, lowercase segment ids and codes, trailing
whitespace, missing optional fields, Z-segments, over-escaped MSH-2. Strict
where it matters to the labels: an unknown result status, a report without
text, a cancellation without an accession, an unsupported message type,
version or processing id is refused with the HL7 error code and the field.

Field positions, names and value sets come from hl7apy's definitions
(daemon.hl7.reference); values are read by splitting on the message's own
delimiters, which is all a reader of a few fields needs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from daemon.hl7 import reference
from daemon.hl7.charsets import Decoded, decode_message
from daemon.hl7.codes import AckCondition, ErrorCode, Location, Problem
from daemon.hl7.escapes import Delimiters, unescape

# Result status (HL7 table 0123) as the daemon treats it.
PRELIMINARY = "P"
FINAL = "F"
CORRECTED = "C"
CANCELLED = "X"
REPORT_STATUSES = (PRELIMINARY, FINAL, CORRECTED)
# Statuses that carry report text but are not final: stored as preliminary.
_PRELIMINARY_LIKE = {"R": PRELIMINARY, "A": PRELIMINARY}
# Order-status statuses (no result yet): acknowledged, stored, no report.
_STATUS_ONLY = {"I", "O", "S", "Y", "Z"}

# Value types (OBX-2) whose OBX-5 is narrative text, and coded ones whose text component is.
_TEXT_TYPES = {"TX", "FT", "ST", "TEXT", ""}
_CODED_TYPES = {"CE", "CWE", "CNE", "CF"}
_UID = re.compile(r"^[0-2](?:\.(?:0|[1-9][0-9]*))+$")
_UID_LOOSE = re.compile(r"^[0-9]+(?:\.[0-9]+)+$")
_STUDY_UID_CODES = {"110180", "113014"}  # DCM "Study Instance UID", "DICOM Study"
_STUDY_UID_NAME = re.compile(r"study\s*_?\s*(instance\s*_?\s*)?uid|studyinstanceuid|siuid", re.IGNORECASE)
_WADO_STUDY = re.compile(r"studyUID=([0-9.]+)", re.IGNORECASE)
_SEGMENT_ID = re.compile(r"^[A-Za-z][A-Za-z0-9]{2}$")
_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?\s*([+-]\d{4})?$")
_FIELD_REF = re.compile(r"^([A-Z][A-Z0-9]{2})-(\d{1,3})(?:\.(\d{1,2}))?$")

# MSH-15/16 values understood (an empty one included).
_ACK_CONDITIONS = frozenset(condition.value for condition in AckCondition) | {""}
# Message-level segments looked up by accession fields, as opposed to per-order ones.
_ORDER_SEGMENTS = {"OBR", "ORC"}
# MDM triggers and the result status their content carries.
_MDM_STATUS = {"T02": None, "T04": None, "T06": FINAL, "T08": CORRECTED, "T10": CORRECTED, "T11": CANCELLED}
_TXA_FINAL = {"AU", "LA", ""}

MAX_ACCESSION = 64
MAX_CONTROL_ID = 199
MAX_PATIENT_ID = 64


@dataclass(frozen=True)
class FieldRef:
    """A field (and component) named in configuration, e.g. "OBR-3" or "OBR-18.1"."""

    segment: str
    position: int
    component: int = 1

    @classmethod
    def parse(cls, text: str) -> FieldRef:
        match = _FIELD_REF.match(text.strip().upper())
        if not match:
            raise ValueError(f"{text!r} is not a field reference like OBR-3 or OBR-18.1")
        return cls(match.group(1), int(match.group(2)), int(match.group(3) or 1))

    def __str__(self) -> str:
        return f"{self.segment}-{self.position}" + (f".{self.component}" if self.component != 1 else "")


@dataclass(frozen=True)
class ParseSettings:
    accepted_types: frozenset[tuple[str, str]] = frozenset({("ORU", "R01"), ("MDM", "T02")})
    accession_fields: tuple[FieldRef, ...] = tuple(FieldRef.parse(f) for f in ("OBR-3", "OBR-2", "OBR-18", "OBR-19"))
    default_charset: str = "ASCII"
    result_statuses: frozenset[str] = field(default_factory=lambda: reference.table_values("HL70123"))
    processing_ids: frozenset[str] = field(default_factory=lambda: reference.table_values("HL70103"))

    @classmethod
    def build(
        cls, accepted_types: Iterable[str], accession_fields: Iterable[str], default_charset: str
    ) -> ParseSettings:
        """From configuration values; raise ValueError naming a bad entry."""
        types = set()
        for entry in accepted_types:
            code, _, trigger = entry.strip().upper().partition("^")
            if not code or not trigger or not reference.message_structure_exists(code, trigger):
                raise ValueError(f"accepted message type {entry!r} is not an HL7 v2 message type like ORU^R01")
            types.add((code, trigger))
        return cls(
            accepted_types=frozenset(types),
            accession_fields=tuple(FieldRef.parse(f) for f in accession_fields),
            default_charset=default_charset,
        )


@dataclass(frozen=True)
class Header:
    """MSH, as read; enough to acknowledge the message."""

    delimiters: Delimiters
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    timestamp: str = ""
    message_code: str = ""
    trigger_event: str = ""
    control_id: str = ""
    processing_id: str = ""
    version: str = ""
    accept_ack: str = ""
    application_ack: str = ""
    charset: str = ""
    codec: str = "ascii"

    @property
    def message_type(self) -> str:
        return f"{self.message_code}^{self.trigger_event}" if self.trigger_event else self.message_code

    @property
    def enhanced_mode(self) -> bool:
        """MSH-15 or MSH-16 valued: enhanced acknowledgement mode (else original mode)."""
        return bool(self.accept_ack or self.application_ack)

    def sender_parts(self) -> tuple[str, str]:
        """Namespace ids (HD.1) of sending application and facility, for the allowlist."""
        component = self.delimiters.component
        return self.sending_application.split(component)[0], self.sending_facility.split(component)[0]


@dataclass(frozen=True)
class PatientIdentifier:
    value: str = field(repr=False)
    authority: str = ""
    type_code: str = ""


@dataclass(frozen=True)
class Patient:
    identifiers: tuple[PatientIdentifier, ...] = field(default=(), repr=False)
    name: str | None = field(default=None, repr=False)

    @property
    def primary(self) -> PatientIdentifier | None:
        """The medical record number if typed so, else the first identifier."""
        for preferred in ("MR", "PI", "PT"):
            for identifier in self.identifiers:
                if identifier.type_code.upper() == preferred:
                    return identifier
        return self.identifiers[0] if self.identifiers else None


@dataclass(frozen=True)
class Report:
    """One report (one order's result) from a message. Text and patient data never appear in repr()."""

    result_status: str
    text: str = field(repr=False)
    accession_number: str | None = None
    accession_field: str | None = None
    study_instance_uid: str | None = None
    observation_time: dt.datetime | None = None
    procedure: str | None = None
    modality: str | None = None


@dataclass(frozen=True)
class Message:
    header: Header
    patient: Patient
    reports: tuple[Report, ...]
    # Hash of everything after MSH: a resend with the same MSH-10 must have the same content.
    content_hash: str
    # Result status of an order-status message that carries no report (I, O, S, ...), else None.
    status_only: str | None = None
    warnings: tuple[str, ...] = ()


class MessageProblem(Exception):
    """The message cannot be accepted; carries the problem and whatever of the header could be read."""

    def __init__(self, problem: Problem, header: Header | None = None) -> None:
        super().__init__(problem.describe())
        self.problem = problem
        self.header = header


# --- segments and fields -------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """One segment split into fields; `fields[n]` is SEG-n (for MSH too: fields[1] is the field separator)."""

    id: str
    fields: tuple[str, ...]
    sequence: int  # 1-based count of this segment id so far, for error locations

    def get(self, position: int) -> str:
        return self.fields[position] if position < len(self.fields) else ""


def split_segments(text: str, field_separator: str) -> list[str]:
    """Segments of a message, tolerant of \\n and \\r\\n separators and of raw line feeds inside text fields."""
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    segments: list[str] = []
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        head = stripped[:3]
        starts_segment = _SEGMENT_ID.match(head) is not None and (
            stripped[3:4] == field_separator or (len(stripped) == 3 and head.isupper())
        )
        if starts_segment or len(segments) < 2:
            # The MSH never continues onto a second line (it has no text field): what follows it starts a
            # segment, so a line break can never reach the header fields echoed in the acknowledgement.
            segments.append(stripped)
        else:
            # A raw line feed inside a text field: the line continues the previous segment.
            segments[-1] += "\n" + line.rstrip()
    return [segment.rstrip("\n") for segment in segments]


def split_fields(segments: Sequence[str], field_separator: str) -> list[Segment]:
    counts: dict[str, int] = {}
    result = []
    for text in segments:
        parts = text.split(field_separator)
        segment_id = parts[0].strip().upper()
        if segment_id == "MSH":
            parts = [segment_id, field_separator, *parts[1:]]
        counts[segment_id] = counts.get(segment_id, 0) + 1
        result.append(Segment(segment_id, tuple(parts), counts[segment_id]))
    return result


def delimiters_of(msh: str, version_hint: str = "") -> Delimiters:
    """The delimiters declared by MSH-1/MSH-2, repaired where senders get MSH-2 wrong."""
    field_separator = msh[3]
    declared = msh[4:].split(field_separator, 1)[0]
    unique = []
    for char in declared:
        if char not in unique and char != field_separator and not char.isalnum() and not char.isspace():
            unique.append(char)
    chars = unique[:4]
    while len(chars) < 4:
        default = "^~\\&"[len(chars)]
        if default in chars or default == field_separator:
            default = next(c for c in "^~\\&#$*!@%" if c not in chars and c != field_separator)
        chars.append(default)
    truncation = unique[4] if len(unique) > 4 and version_hint >= "2.7" else ""
    return Delimiters(field_separator, chars[0], chars[1], chars[2], chars[3], truncation)


# --- the message -------------------------------------------------------------------


def parse_message(raw: bytes, settings: ParseSettings) -> Message:
    """Decode and read one message; raise MessageProblem (with the header if it was readable)."""
    opened = _open(raw, settings.default_charset)
    if opened is None:
        raise MessageProblem(
            Problem(
                ErrorCode.SEGMENT_SEQUENCE_ERROR,
                "message does not start with an MSH segment",
                Location("MSH"),
                reject=True,
            )
        )
    text, delimiters, decoded = opened
    segments = split_fields(split_segments(text, delimiters.field), delimiters.field)
    header = read_header(segments[0], delimiters, decoded.codec)
    warnings: list[str] = [decoded.warning] if decoded.warning else []
    header = check_header(header, settings, warnings)
    for segment in segments[1:]:
        if segment.id in ("MSH", "FHS", "BHS"):
            # One message per MLLP frame: a second header would merge two messages under one ACK.
            text = (
                f"{segment.id} segment inside the message: send one message per MLLP frame (batches are not supported)"
            )
            raise MessageProblem(
                Problem(ErrorCode.SEGMENT_SEQUENCE_ERROR, text, Location(segment.id, segment.sequence), reject=True),
                header,
            )
    body = "\r".join(delimiters.field.join(s.fields[1:]) for s in segments[1:])
    patient = read_patient(segments, delimiters, header, warnings)
    reports, status_only = read_reports(segments, header, settings, warnings)
    content_hash = hashlib.sha256(body.encode()).hexdigest()
    return Message(header, patient, tuple(reports), content_hash, status_only, tuple(warnings))


def peek_header(raw: bytes, default_charset: str) -> Header | None:
    """Just the MSH of a message that cannot be read whole (too large, or failing elsewhere); None if unreadable."""
    try:
        opened = _open(raw[:4096], default_charset)
        if opened is None:
            return None
        text, delimiters, decoded = opened
        first_line = re.split(r"[\r\n]", text, maxsplit=1)[0]
        return read_header(split_fields([first_line], delimiters.field)[0], delimiters, decoded.codec)
    except Exception:  # a header that cannot be read is answered with defaults
        return None


def _open(raw: bytes, default_charset: str) -> tuple[str, Delimiters, Decoded] | None:
    """Decoded text starting at MSH, and its delimiters; None if it does not start with an MSH segment."""
    decoded = decode_message(raw, default_charset)
    # NUL never means anything in HL7, and PostgreSQL refuses it in text columns.
    text = decoded.text.replace("\x00", "").lstrip("\ufeff \t\r\n")
    if len(text) < 8 or text[:3].upper() != "MSH" or text[3].isalnum() or text[3].isspace():
        return None
    first_line = re.split(r"[\r\n]", text, maxsplit=1)[0]
    fields = first_line.split(text[3])
    version_hint = _component(fields[11], "^").strip() if len(fields) > 11 else ""
    return text, delimiters_of(first_line, version_hint), decoded


def read_header(msh: Segment, delimiters: Delimiters, codec: str) -> Header:
    """MSH-3..6 and MSH-10 stay as sent (escaped): they are identities, echoed verbatim in the acknowledgement."""

    def value(position: int, component: int | None = None) -> str:
        raw = msh.get(position)
        if component is not None:
            raw = _component(raw, delimiters.component, component)
        return unescape(raw.strip(), delimiters, codec)

    return Header(
        delimiters=delimiters,
        sending_application=msh.get(3).strip(),
        sending_facility=msh.get(4).strip(),
        receiving_application=msh.get(5).strip(),
        receiving_facility=msh.get(6).strip(),
        timestamp=value(7, 1),
        message_code=value(9, 1).upper(),
        trigger_event=value(9, 2).upper(),
        control_id=msh.get(10).strip(),
        processing_id=value(11, 1).upper(),
        version=value(12, 1),
        accept_ack=value(15).upper(),
        application_ack=value(16).upper(),
        charset=_component(msh.get(18), delimiters.repetition).strip(),
        codec=codec,
    )


def check_header(header: Header, settings: ParseSettings, warnings: list[str]) -> Header:
    """Validate MSH-9..12 (AR on failure, as HL7 prescribes) and normalise what can be normalised."""
    replace: dict[str, str] = {}
    code, trigger = header.message_code, header.trigger_event
    if "_" in code and not trigger:
        code, _, trigger = code.partition("_")
    if code == "ORU" and not trigger:
        trigger = "R01"
        warnings.append("MSH-9 without trigger event; taken as ORU^R01")
    replace.update(message_code=code, trigger_event=trigger)
    for condition_field in ("accept_ack", "application_ack"):
        if getattr(header, condition_field) not in _ACK_CONDITIONS:
            warnings.append(f"unknown acknowledgement condition {getattr(header, condition_field)!r}; ignored")
            replace[condition_field] = ""
    if not header.version:
        warnings.append("MSH-12 empty; read as 2.5")
        replace["version"] = "2.5"
    if not header.processing_id:
        replace["processing_id"] = "P"
    if any(getattr(header, name) != value for name, value in replace.items()):
        header = dataclasses.replace(header, **replace)
    if not header.control_id:
        raise MessageProblem(
            _reject(ErrorCode.REQUIRED_FIELD_MISSING, "MSH-10 (message control id) is empty", 10), header
        )
    if len(header.control_id) > MAX_CONTROL_ID:
        raise MessageProblem(_reject(ErrorCode.DATA_TYPE_ERROR, f"MSH-10 longer than {MAX_CONTROL_ID}", 10), header)
    if not code:
        raise MessageProblem(_reject(ErrorCode.REQUIRED_FIELD_MISSING, "MSH-9 (message type) is empty", 9), header)
    if (code, trigger) not in settings.accepted_types:
        if any(code == accepted_code for accepted_code, _ in settings.accepted_types):
            raise MessageProblem(
                _reject(
                    ErrorCode.UNSUPPORTED_EVENT_CODE,
                    f"trigger event {trigger or '(empty)'} not accepted for {code}",
                    9,
                    2,
                ),
                header,
            )
        raise MessageProblem(
            _reject(ErrorCode.UNSUPPORTED_MESSAGE_TYPE, f"message type {code} not accepted", 9, 1), header
        )
    if reference.reference_version(header.version) is None:
        raise MessageProblem(
            _reject(ErrorCode.UNSUPPORTED_VERSION_ID, f"version {header.version} not supported (2.1 to 2.8)", 12),
            header,
        )
    if header.processing_id not in settings.processing_ids:
        raise MessageProblem(
            _reject(ErrorCode.UNSUPPORTED_PROCESSING_ID, f"processing id {header.processing_id} not supported", 11),
            header,
        )
    return header


def read_patient(segments: Sequence[Segment], delimiters: Delimiters, header: Header, warnings: list[str]) -> Patient:
    pid = next((s for s in segments if s.id == "PID"), None)
    if pid is None:
        return Patient()
    identifiers: list[PatientIdentifier] = []
    for position in (3, 2, 4):
        for repetition in pid.get(position).split(delimiters.repetition):
            value = unescape(_component(repetition, delimiters.component, 1).strip(), delimiters, header.codec)
            if not value:
                continue
            if len(value) > MAX_PATIENT_ID:
                warnings.append(f"PID-{position} identifier longer than {MAX_PATIENT_ID}; ignored")
                continue
            authority_field = _component(repetition, delimiters.component, 4)
            authority = next((p for p in authority_field.split(delimiters.subcomponent) if p.strip()), "")
            identifiers.append(
                PatientIdentifier(
                    value=value,
                    authority=unescape(authority.strip(), delimiters, header.codec)[:64],
                    type_code=_component(repetition, delimiters.component, 5).strip().upper(),
                )
            )
        if identifiers:
            break
    name_field = _component(pid.get(5), delimiters.repetition)
    parts = [_component(name_field, delimiters.component, i).split(delimiters.subcomponent)[0] for i in (1, 2, 3, 5, 4)]
    name = "^".join(unescape(p.strip(), delimiters, header.codec) for p in parts).rstrip("^")
    return Patient(identifiers=tuple(identifiers), name=name[:320] or None)


# --- orders and report text --------------------------------------------------------


@dataclass
class _Order:
    """Segments of one order: its OBR (None for MDM without OBR), the ORC before it, OBX and NTE after it."""

    obr: Segment | None
    orc: Segment | None
    observations: list[Segment] = field(default_factory=list)
    notes: list[Segment] = field(default_factory=list)


def read_reports(
    segments: Sequence[Segment], header: Header, settings: ParseSettings, warnings: list[str]
) -> tuple[list[Report], str | None]:
    delimiters = header.delimiters
    orders: list[_Order] = []
    message_level: dict[str, Segment] = {}
    last_orc: Segment | None = None
    for segment in segments[1:]:
        if segment.id == "ORC":
            last_orc = segment
        elif segment.id == "OBR":
            orders.append(_Order(segment, last_orc))
        elif segment.id in ("OBX", "NTE"):
            if not orders:
                orders.append(_Order(None, last_orc))
            (orders[-1].observations if segment.id == "OBX" else orders[-1].notes).append(segment)
        else:
            message_level.setdefault(segment.id, segment)
    if not orders:
        where = "OBR" if header.message_code == "ORU" else "OBX"
        raise MessageProblem(
            Problem(
                ErrorCode.SEGMENT_SEQUENCE_ERROR, f"no {where} segment: the message carries no result", Location(where)
            ),
            header,
        )
    message_uid = _message_study_uid(message_level, delimiters, warnings)
    drafts = [
        _read_order(order, index, header, settings, message_level, message_uid, warnings)
        for index, order in enumerate(orders)
    ]

    statuses = {d.status for d in drafts}
    if statuses <= _STATUS_ONLY:
        return [], sorted(statuses)[0]
    reportable = [d for d in drafts if d.status not in _STATUS_ONLY]
    shared_text = "\n\n".join(d.text for d in reportable if d.text)
    reports: dict[str, Report] = {}
    unkeyed: list[Report] = []
    for draft in reportable:
        text = draft.text or shared_text
        if draft.status in REPORT_STATUSES and not text:
            raise MessageProblem(
                Problem(ErrorCode.REQUIRED_FIELD_MISSING, "no report text in any OBX-5", Location("OBX", 1, 5)),
                header,
            )
        if draft.status == CANCELLED and not draft.accession:
            first = settings.accession_fields[0] if settings.accession_fields else FieldRef("OBR", 3)
            raise MessageProblem(
                Problem(
                    ErrorCode.REQUIRED_FIELD_MISSING,
                    "cancellation (result status X) without an accession number",
                    Location(first.segment, draft.sequence, first.position),
                ),
                header,
            )
        report = Report(
            result_status=draft.status,
            text=text,
            accession_number=draft.accession,
            accession_field=draft.accession_field,
            study_instance_uid=draft.study_uid,
            observation_time=draft.observation_time,
            procedure=draft.procedure,
            modality=draft.modality,
        )
        if draft.accession is None:
            unkeyed.append(report)
        elif draft.accession in reports:
            # Two orders with one accession (e.g. an addendum as its own OBR): one report.
            earlier = reports[draft.accession]
            joined = earlier.text if text == earlier.text else f"{earlier.text}\n\n{text}"
            reports[draft.accession] = dataclasses.replace(earlier, text=joined, result_status=report.result_status)
        else:
            reports[draft.accession] = report
    return [*reports.values(), *unkeyed], None


@dataclass(frozen=True)
class _Draft:
    sequence: int
    status: str
    text: str
    accession: str | None
    accession_field: str | None
    study_uid: str | None
    observation_time: dt.datetime | None
    procedure: str | None
    modality: str | None


def _read_order(
    order: _Order,
    index: int,
    header: Header,
    settings: ParseSettings,
    message_level: dict[str, Segment],
    message_uid: str | None,
    warnings: list[str],
) -> _Draft:
    delimiters = header.delimiters
    codec = header.codec
    sequence = order.obr.sequence if order.obr else index + 1

    def lookup(ref: FieldRef) -> str:
        if ref.segment == "OBR":
            segment = order.obr
        elif ref.segment == "ORC":
            segment = order.orc
        else:
            segment = message_level.get(ref.segment)
        if segment is None:
            return ""
        value = _component(segment.get(ref.position), delimiters.repetition)
        return unescape(_component(value, delimiters.component, ref.component).strip(), delimiters, codec).strip()

    accession = accession_field = None
    candidates = list(settings.accession_fields)
    if order.obr is None:
        candidates += [FieldRef("TXA", 15), FieldRef("TXA", 14)]
    for ref in candidates:
        value = lookup(ref)
        if value:
            accession, accession_field = value, str(ref)
            break
    if accession is not None and len(accession) > MAX_ACCESSION:
        raise MessageProblem(
            Problem(
                ErrorCode.DATA_TYPE_ERROR,
                f"accession number longer than {MAX_ACCESSION} characters",
                _location_of(accession_field, sequence),
            ),
            header,
        )
    status = _result_status(order, header, settings, message_level, sequence, warnings)
    text, uid = _observations_text(order, delimiters, codec, warnings)
    if not text and order.notes:
        notes = (line for note in order.notes for line in note.get(3).split(delimiters.repetition))
        text = _tidy("\n".join(unescape(line, delimiters, codec) for line in notes))
    obr = order.obr
    observed = None
    for raw in ((obr.get(7), obr.get(22)) if obr else ()) + tuple(o.get(14) for o in order.observations[:1]):
        observed = parse_timestamp(_component(raw, delimiters.component))
        if observed is not None:
            break
    if observed is None and "TXA" in message_level:
        observed = parse_timestamp(_component(message_level["TXA"].get(4), delimiters.component))
    procedure = modality = None
    if obr is not None:
        service = obr.get(4)
        procedure_text = _component(service, delimiters.component, 2) or _component(service, delimiters.component, 1)
        procedure = unescape(procedure_text.strip(), delimiters, codec)[:200] or None
        section = _component(obr.get(24), delimiters.component).strip().upper()
        modality = section if 0 < len(section) <= 16 else None
    return _Draft(
        sequence=sequence,
        status=status,
        text=text,
        accession=accession,
        accession_field=accession_field,
        study_uid=uid or message_uid,
        observation_time=observed,
        procedure=procedure,
        modality=modality,
    )


def _result_status(
    order: _Order,
    header: Header,
    settings: ParseSettings,
    message_level: dict[str, Segment],
    sequence: int,
    warnings: list[str],
) -> str:
    delimiters = header.delimiters
    if order.obr is None:
        implied = _MDM_STATUS.get(header.trigger_event)
        if implied is not None:
            return implied
        txa = message_level.get("TXA")
        completion = _component(txa.get(17), delimiters.component).strip().upper() if txa else ""
        return FINAL if completion in _TXA_FINAL else PRELIMINARY
    status = _component(order.obr.get(25), delimiters.component).strip().upper()
    if not status:
        warnings.append(f"OBR-25 empty in OBR #{sequence}; taken as F")
        return FINAL
    if status not in settings.result_statuses:
        raise MessageProblem(
            Problem(
                ErrorCode.TABLE_VALUE_NOT_FOUND,
                f"result status {status!r} is not in HL7 table 0123",
                Location("OBR", sequence, 25),
            ),
            header,
        )
    if header.message_code == "MDM" and header.trigger_event in _MDM_STATUS and _MDM_STATUS[header.trigger_event]:
        return _MDM_STATUS[header.trigger_event]  # type: ignore[return-value]
    return _PRELIMINARY_LIKE.get(status, status)


def _observations_text(
    order: _Order, delimiters: Delimiters, codec: str, warnings: list[str]
) -> tuple[str, str | None]:
    """Report text from an order's OBX segments, and a Study Instance UID if one of them carries it."""
    lines: list[str] = []
    study_uid: str | None = None
    for obx in order.observations:
        value_type = _component(obx.get(2), delimiters.component).strip().upper()
        if _component(obx.get(11), delimiters.component).strip().upper() in ("D", "W", "X"):
            continue  # deleted, wrong or cannot be obtained
        value = obx.get(5)
        uid = _study_uid_in(obx, value_type, value, delimiters)
        if uid is not None:
            study_uid = study_uid or uid
            continue
        if value_type in _TEXT_TYPES:
            # Text types have no components: a '^' or '&' the sender left unescaped is text.
            lines.extend(unescape(repetition, delimiters, codec) for repetition in value.split(delimiters.repetition))
        elif value_type not in _CODED_TYPES:
            note = f"OBX values of type {value_type} are not report text; not read"
            if value.strip() and note not in warnings:
                warnings.append(note)
        else:
            for repetition in value.split(delimiters.repetition):
                coded = next(
                    (
                        _component(repetition, delimiters.component, i)
                        for i in (2, 5, 9, 1)
                        if _component(repetition, delimiters.component, i).strip()
                    ),
                    "",
                )
                if coded.strip():
                    lines.append(unescape(coded, delimiters, codec))
    return _tidy("\n".join(lines)), study_uid


def _study_uid_in(obx: Segment, value_type: str, value: str, delimiters: Delimiters) -> str | None:
    first = _component(value, delimiters.component, 1).strip()
    # The value's shape first: for report text it fails at once, sparing the name search on every OBX.
    if _UID_LOOSE.match(first) and len(first) <= 64:
        identifier = obx.get(3)
        code = _component(identifier, delimiters.component, 1).strip()
        if code in _STUDY_UID_CODES or _STUDY_UID_NAME.search(identifier.replace(delimiters.component, " ")):
            return first
    if value_type == "RP":
        match = _WADO_STUDY.search(value)
        if match and len(match.group(1)) <= 64:
            return match.group(1)
    return None


def _message_study_uid(message_level: dict[str, Segment], delimiters: Delimiters, warnings: list[str]) -> str | None:
    for segment_id, position in (("ZDS", 1), ("IPC", 3)):
        segment = message_level.get(segment_id)
        if segment is None:
            continue
        value = _component(_component(segment.get(position), delimiters.repetition), delimiters.component).strip()
        if value and _UID_LOOSE.match(value) and len(value) <= 64:
            if not _UID.match(value):
                warnings.append(f"{segment_id}-{position} UID has a leading zero in a component; kept")
            return value
        if value:
            warnings.append(f"{segment_id}-{position} is not a DICOM UID; ignored")
    return None


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


# --- small helpers ------------------------------------------------------------------


def parse_timestamp(value: str) -> dt.datetime | None:
    """HL7 TS/DTM (YYYY[MM[DD[HH[MM[SS[.S...]]]]]][+/-ZZZZ]); no offset means the host's local time."""
    match = _TS.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    try:
        moment = dt.datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")[:6]),
        )
        if offset:
            sign = 1 if offset[0] == "+" else -1
            delta = dt.timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
            return moment.replace(tzinfo=dt.timezone(sign * delta))
        # In the conversion too: year 1 in local time may fall before year 1 in UTC (found by atheris).
        return moment.astimezone()
    except (ValueError, OverflowError):
        return None


def _component(value: str, separator: str, index: int = 1) -> str:
    """The index-th (1-based) part of value split on separator; index 0 means the whole value."""
    if index == 0:
        return value
    if separator not in value:
        return value if index == 1 else ""
    parts = value.split(separator)
    return parts[index - 1] if index <= len(parts) else ""


def _reject(code: ErrorCode, text: str, position: int, component: int | None = None) -> Problem:
    return Problem(code, text, Location("MSH", 1, position, component), reject=True)


def _location_of(field_ref: str | None, sequence: int) -> Location | None:
    if not field_ref:
        return None
    ref = FieldRef.parse(field_ref)
    return Location(ref.segment, sequence if ref.segment in _ORDER_SEGMENTS else 1, ref.position)
