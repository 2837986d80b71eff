"""From a received data set to the rows of the study index (pure).

`read_header` reads only the attributes the index needs (everything up to
Instance Number, so never the pixel data), as raw bytes, from the data set
as received; `index_record` maps them to one frozen record, validating the UIDs
that will become paths. A data set the index cannot understand raises
`MalformedDataset` with a reason that names no patient data.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from io import BytesIO

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.filereader import data_element_generator
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from daemon.dicom.uids import InvalidUid, validate_uid

# The last tag the index reads: (0020,0013) Instance Number. Tags are ordered,
# so reading stops before any later element (and before Pixel Data).
LAST_INDEXED_TAG = 0x00200013
_SPECIFIC_CHARACTER_SET = 0x00080005
_TAGS = {
    "SOPClassUID": 0x00080016,
    "SOPInstanceUID": 0x00080018,
    "StudyDate": 0x00080020,
    "StudyTime": 0x00080030,
    "AccessionNumber": 0x00080050,
    "Modality": 0x00080060,
    "ReferringPhysicianName": 0x00080090,
    "StudyDescription": 0x00081030,
    "SeriesDescription": 0x0008103E,
    "PatientName": 0x00100010,
    "PatientID": 0x00100020,
    "IssuerOfPatientID": 0x00100021,
    "PatientBirthDate": 0x00100030,
    "PatientSex": 0x00100040,
    "BodyPartExamined": 0x00180015,
    "StudyInstanceUID": 0x0020000D,
    "SeriesInstanceUID": 0x0020000E,
    "SeriesNumber": 0x00200011,
    "InstanceNumber": 0x00200013,
}
# The tags whose raw values make a Header.
INDEXED_TAGS = frozenset({_SPECIFIC_CHARACTER_SET, *_TAGS.values()})
_PERSON_NAMES = frozenset({"PatientName", "ReferringPhysicianName"})
_DELIMITERS = {0x5C}
_PN_DELIMITERS = {0x5C, 0x3D, 0x5E}
# Deflated data sets are inflated only this far to read the header.
DEFLATED_HEADER_LIMIT = 4 * 1024 * 1024

# Column widths of the index (daemon/store/schema.py); longer values are cut.
_WIDTH = {
    "patient_id": 64,
    "issuer_of_patient_id": 64,
    "patient_name": 320,
    "sex": 16,
    "accession_number": 64,
    "study_time": 16,
    "study_description": 64,
    "referring_physician": 320,
    "modality": 16,
    "series_description": 64,
    "body_part_examined": 16,
}
_DATE = re.compile(r"[0-9]{8}")


class MalformedDataset(ValueError):
    """The data set cannot be indexed; the message is safe to log and to audit (no patient data)."""


@dataclass(frozen=True)
class PatientInfo:
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str | None
    birth_date: str | None
    sex: str | None


@dataclass(frozen=True)
class StudyInfo:
    study_instance_uid: str
    accession_number: str | None
    study_date: str | None
    study_time: str | None
    study_description: str | None
    referring_physician: str | None


@dataclass(frozen=True)
class SeriesInfo:
    series_instance_uid: str
    modality: str | None
    series_number: int | None
    series_description: str | None
    body_part_examined: str | None


@dataclass(frozen=True)
class IndexRecord:
    """Everything the index keeps about one received instance, except how and when it was received."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    instance_number: int | None
    patient: PatientInfo
    study: StudyInfo
    series: SeriesInfo


@dataclass(frozen=True)
class Header:
    """The raw values (bytes as received) of the attributes the index reads, by tag, and their character sets."""

    values: Mapping[int, bytes]
    encodings: tuple[str, ...] = ("iso8859",)

    def __contains__(self, tag: int) -> bool:
        return tag in self.values


def read_header(data: bytes | memoryview, transfer_syntax_uid: str) -> Header:
    """The raw values of the indexed attributes, read from data set bytes in `transfer_syntax_uid`.

    Only elements up to LAST_INDEXED_TAG are parsed (so never Pixel Data), as
    raw bytes: no value is converted or validated by pydicom, which would log
    invalid values - and a log line must never carry a patient's name.
    """
    syntax = UID(transfer_syntax_uid)
    try:
        if syntax == DeflatedExplicitVRLittleEndian:
            data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, DEFLATED_HEADER_LIMIT)
        is_implicit = bool(syntax.is_implicit_VR)
        is_little = bool(syntax.is_little_endian)
    except (zlib.error, ValueError, AttributeError) as exc:
        raise MalformedDataset(f"cannot read data set in transfer syntax {transfer_syntax_uid}: {type(exc).__name__}")
    values: dict[int, bytes] = {}
    try:
        for element in data_element_generator(BytesIO(data), is_implicit, is_little, stop_when=_after_indexed_tags):
            tag = int(element.tag)
            if tag in INDEXED_TAGS and isinstance(element.value, bytes):
                values[tag] = element.value
    except Exception as exc:  # pydicom raises many types on garbage; all mean "cannot understand"
        raise MalformedDataset(f"cannot decode data set header: {type(exc).__name__}") from None
    return header_of(values)


def header_of(values: Mapping[int, bytes]) -> Header:
    """The Header of these raw values (by tag; those of INDEXED_TAGS are read)."""
    return Header(values, tuple(_encodings(values.get(_SPECIFIC_CHARACTER_SET))))


def _after_indexed_tags(tag: int, _vr: str | None, _length: int) -> bool:
    return int(tag) > LAST_INDEXED_TAG


def index_record(
    header: Header, *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str
) -> IndexRecord:
    """Map a decoded header to an IndexRecord; the UIDs from the C-STORE request must match the data set's."""
    try:
        sop_class = validate_uid(sop_class_uid, "Affected SOP Class UID")
        sop_instance = validate_uid(sop_instance_uid, "Affected SOP Instance UID")
        study_uid = validate_uid(_uid(header, "StudyInstanceUID"), "Study Instance UID")
        series_uid = validate_uid(_uid(header, "SeriesInstanceUID"), "Series Instance UID")
    except InvalidUid as exc:
        raise MalformedDataset(str(exc)) from None
    in_dataset = _uid(header, "SOPInstanceUID")
    if in_dataset is not None and in_dataset != sop_instance:
        raise MalformedDataset("SOP Instance UID of the data set differs from the C-STORE request's")
    class_in_dataset = _uid(header, "SOPClassUID")
    if class_in_dataset is not None and class_in_dataset != sop_class:
        raise MalformedDataset("SOP Class UID of the data set differs from the C-STORE request's")
    return IndexRecord(
        sop_instance_uid=sop_instance,
        sop_class_uid=sop_class,
        transfer_syntax_uid=transfer_syntax_uid,
        instance_number=_integer(header, "InstanceNumber"),
        patient=PatientInfo(
            patient_id=_cut("patient_id", _text(header, "PatientID")) or "",
            issuer_of_patient_id=_cut("issuer_of_patient_id", _text(header, "IssuerOfPatientID")) or "",
            patient_name=_cut("patient_name", _text(header, "PatientName")),
            birth_date=_date(header, "PatientBirthDate"),
            sex=_cut("sex", _text(header, "PatientSex")),
        ),
        study=StudyInfo(
            study_instance_uid=study_uid,
            accession_number=_cut("accession_number", _text(header, "AccessionNumber")),
            study_date=_date(header, "StudyDate"),
            study_time=_cut("study_time", _text(header, "StudyTime")),
            study_description=_cut("study_description", _text(header, "StudyDescription")),
            referring_physician=_cut("referring_physician", _text(header, "ReferringPhysicianName")),
        ),
        series=SeriesInfo(
            series_instance_uid=series_uid,
            modality=_cut("modality", _text(header, "Modality")),
            series_number=_integer(header, "SeriesNumber"),
            series_description=_cut("series_description", _text(header, "SeriesDescription")),
            body_part_examined=_cut("body_part_examined", _text(header, "BodyPartExamined")),
        ),
    )


def _text(header: Header, keyword: str) -> str | None:
    """The attribute's first value as stripped text, decoded with the data set's character sets; None if empty."""
    raw = header.values.get(_TAGS[keyword])
    if not raw:
        return None
    delimiters = _PN_DELIMITERS if keyword in _PERSON_NAMES else _DELIMITERS
    text = decode_bytes(raw, list(header.encodings), delimiters).split("\\", 1)[0].strip(" \x00")
    return text or None


def _uid(header: Header, keyword: str) -> str | None:
    """A UID attribute's whole value (VM is 1: "1.2\\..\\x" must fail validation, not pass as "1.2"); None if empty.

    Found by tests/reliability/test_access.py: a multi-valued SOP Instance UID was stored under its first value.
    """
    raw = header.values.get(_TAGS[keyword])
    if not raw:
        return None
    return raw.decode("ascii", "replace").strip(" \x00") or None


def _encodings(raw: bytes | None) -> list[str]:
    names = [name.strip() for name in (raw or b"").decode("ascii", "replace").split("\\")]
    return convert_encodings([name for name in names if name] or ["ISO_IR 6"])


def _integer(header: Header, keyword: str) -> int | None:
    text = _text(header, keyword)
    if text is None:
        return None
    try:
        number = int(float(text))
    except ValueError:
        return None
    return number if -(2**31) <= number < 2**31 else None


def _date(header: Header, keyword: str) -> str | None:
    text = _text(header, keyword)
    return text if text is not None and _DATE.fullmatch(text) else None


def _cut(column: str, value: str | None) -> str | None:
    return value[: _WIDTH[column]] if value is not None else None
