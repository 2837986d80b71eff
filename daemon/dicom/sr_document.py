"""The label SR's document around its content, encoded per study without building it with highdicom.

`label_document` (daemon/dicom/sr.py) builds the Comprehensive SR with highdicom's `ComprehensiveSR`, and
pydicom then encodes every element: ~6 ms of CPU a study, the largest single cost of a write-back. Most of
the document is the same for every study labelled by one model: the SOP class, modality, series number and
description, manufacturer and model, completion and verification flags, coding schemes, the root content
item's concept and template, highdicom's own contributing-equipment item. `DocumentTemplate` is built once
from a highdicom document (per model, state and character set) and keeps those elements encoded; per study
`encode_document` encodes only what highdicom derives from the study, in the same way highdicom derives it:

- the UIDs, instance number, creation and content date and time (the clock, read as highdicom reads it);
- patient and study attributes: highdicom's own values of its constructor's arguments (with its checks, so
  a value it rejects is rejected here too), then every root attribute of the evidence IOD's Patient and
  Study modules the first evidence instance has, copied as highdicom copies them (its module tables);
- the acquisition equipment of the first evidence instance (highdicom's `for_image_acquisition`, encoded
  once per distinct equipment) and highdicom's processing-equipment item with its contribution time;
- the evidence and predecessor references (highdicom's `collect_evidence`; predecessors grouped as
  highdicom groups them);
- the Accession Number from the labels when the evidence has none (as `label_document`).

The elements are written in tag order with pydicom's `write_data_element`, behind the file meta
information and preamble `dcmwrite` writes. tests/dicom/test_sr_template.py compares the result byte for
byte with the full highdicom build over evidence shapes, predecessors, withdrawals and character sets; a
template whose highdicom document has an element this module would not write fails when it is made.
"""

from __future__ import annotations

import collections
import datetime as dt
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
from highdicom import _standard_utils
from highdicom.sr.utils import collect_evidence
from highdicom.valuerep import check_person_name
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, writers
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID
from pydicom.valuerep import DA, DT, TM

ITEM = b"\xfe\xff\x00\xe0"
# The VRs `encode_element` writes itself: 2-byte explicit length, value written without the character set.
_PLAIN_VRS = frozenset(("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "SL", "SS", "TM", "UI", "UL", "US"))
_SHORT_HEADER = struct.Struct("<HH2sH")
CONTRIBUTING_EQUIPMENT_SEQUENCE = Tag(0x0018, 0xA001)
CONTRIBUTION_DATETIME = Tag(0x0018, 0xA002)
MEDIA_STORAGE_SOP_INSTANCE_UID = Tag(0x0002, 0x0003)
CURRENT_EVIDENCE_SEQUENCE = Tag(0x0040, 0xA375)
REFERENCED_SERIES_SEQUENCE = Tag(0x0008, 0x1115)
REFERENCED_SOP_SEQUENCE = Tag(0x0008, 0x1199)
REFERENCED_SOP_CLASS_UID = Tag(0x0008, 0x1150)
REFERENCED_SOP_INSTANCE_UID = Tag(0x0008, 0x1155)
SERIES_INSTANCE_UID = Tag(0x0020, 0x000E)
STUDY_INSTANCE_UID = Tag(0x0020, 0x000D)
ACCESSION_NUMBER = Tag(0x0008, 0x0050)

# Elements of highdicom's document that depend on the study (everything else is the template's).
_PER_STUDY = frozenset(
    Tag(keyword)
    for keyword in (
        "InstanceCreationDate", "InstanceCreationTime", "SOPInstanceUID", "StudyDate", "ContentDate", "StudyTime",
        "ContentTime", "AccessionNumber", "ReferringPhysicianName", "PatientName", "PatientID", "PatientBirthDate",
        "PatientSex", "ContributingEquipmentSequence", "StudyInstanceUID", "SeriesInstanceUID", "StudyID",
        "InstanceNumber", "CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence",
        "PredecessorDocumentsSequence", "ContentSequence",
    )
)
# Equipment attributes `ContributingEquipment.for_image_acquisition` reads (its item is kept per distinct set).
_ACQUISITION_KEYWORDS = (
    "SOPClassUID", "Manufacturer", "ManufacturerModelName", "SoftwareVersions", "DeviceSerialNumber",
    "InstitutionName", "InstitutionalDepartmentName", "InstitutionAddress", "StationName", "AcquisitionDateTime",
    "AcquisitionDate", "AcquisitionTime",
)
_ACQUISITION_TAGS = tuple(Tag(keyword) for keyword in _ACQUISITION_KEYWORDS)
_EQUIPMENT_CAPACITY = 64


@dataclass(frozen=True)
class DocumentTemplate:
    """The encoded elements of a label SR document that are the same for every study (of one model, state and
    character set), and highdicom's processing-equipment item around its contribution time."""

    encodings: list[str]
    constant: Mapping[int, bytes]  # by tag as a plain int (BaseTag compares in Python: slow to sort)
    specific_character_set: object
    file_meta_before: bytes  # the file meta elements before Media Storage SOP Instance UID (group length aside)
    file_meta_after: bytes
    highdicom_item: tuple[bytes, bytes]  # its elements before and after the Contribution DateTime


class DocumentParts:
    """What the documents share beyond a template, kept between studies: the encoded acquisition-equipment item
    per distinct equipment of the first evidence instance, and the attributes copied per evidence SOP class."""

    def __init__(self, capacity: int = _EQUIPMENT_CAPACITY) -> None:
        self._capacity = capacity
        self._items: collections.OrderedDict[tuple[str, ...], bytes | None] = collections.OrderedDict()
        self._copied: dict[str, tuple[BaseTag, ...]] = {}
        self._lock = threading.Lock()

    def copied_tags(self, sop_class_uid: str) -> tuple[BaseTag, ...]:
        """The root attributes of the Patient and Study modules of the IOD of `sop_class_uid`, in highdicom's
        order of copying them (`SOPClass.copy_patient_and_study_information`); an unknown SOP class raises as
        there."""
        found = self._copied.get(sop_class_uid)
        if found is None:
            found = _module_root_tags(sop_class_uid)
            with self._lock:
                self._copied[sop_class_uid] = found
        return found

    def acquisition_item(self, evidence: Dataset, encodings: list[str]) -> bytes | None:
        """highdicom's acquisition-equipment item for `evidence`, encoded; None when highdicom makes none."""
        key = (repr(encodings), *(_as_read(evidence.get_item(tag)) for tag in _ACQUISITION_TAGS))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        try:
            equipment: Dataset | None = hd.ContributingEquipment.for_image_acquisition(evidence)
        except Exception:  # noqa: BLE001 - as highdicom: evidence that is no image has no acquisition item
            equipment = None
        encoded = _item_body(equipment, encodings) if equipment is not None else None
        with self._lock:
            self._items[key] = encoded
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return encoded


def make_template(document: hd.sr.ComprehensiveSR, encodings: list[str]) -> DocumentTemplate:
    """The template of `document` (a label SR built by `label_document` for a placeholder study)."""
    constant = {
        int(element.tag): encode_element(element, encodings)
        for element in document
        if element.tag not in _PER_STUDY and not (element.tag.element == 0 and element.tag.group > 6)
    }
    meta = document.file_meta
    tags = sorted(meta.keys())
    before = b"".join(
        encode_element(meta[tag], encodings) for tag in tags if 0x00020000 < tag < MEDIA_STORAGE_SOP_INSTANCE_UID
    )
    after = b"".join(encode_element(meta[tag], encodings) for tag in tags if tag > MEDIA_STORAGE_SOP_INSTANCE_UID)
    items = document.ContributingEquipmentSequence
    highdicom_item = items[len(items) - 1]
    split = {tag: encode_element(highdicom_item[tag], encodings) for tag in highdicom_item.keys()}
    if CONTRIBUTION_DATETIME not in split:
        raise RuntimeError("highdicom's equipment item of the SR has no Contribution DateTime")
    return DocumentTemplate(
        encodings=encodings,
        constant=constant,
        specific_character_set=document.get("SpecificCharacterSet"),
        file_meta_before=before,
        file_meta_after=after,
        highdicom_item=(
            b"".join(value for tag, value in sorted(split.items()) if tag < CONTRIBUTION_DATETIME),
            b"".join(value for tag, value in sorted(split.items()) if tag > CONTRIBUTION_DATETIME),
        ),
    )


def encode_document(
    template: DocumentTemplate,
    parts: DocumentParts,
    *,
    evidence: Sequence[Dataset],
    content: bytes,
    series_instance_uid: str,
    sop_instance_uid: str,
    instance_number: int,
    accession_number: str | None,
    previous_versions: Sequence[Dataset] = (),
    clock: Callable[[], dt.datetime] = dt.datetime.now,
) -> bytes:
    """The Part 10 bytes of the label SR around the encoded root Content Sequence value `content`."""
    first = evidence[0]
    # Keyed by the tag as a plain int: sorting and looking up BaseTags runs their comparisons in Python.
    elements: dict[int, DataElement | bytes] = dict(template.constant)
    elements.update(_base_elements(first, series_instance_uid, sop_instance_uid, instance_number, clock()))
    study_uid = str(first.StudyInstanceUID)
    references = Dataset()
    packed = _evidence_of_one_study(evidence, study_uid)
    if packed is not None:
        elements[int(CURRENT_EVIDENCE_SEQUENCE)] = packed
    else:
        no_references = Dataset()  # the content references no instance (collect_evidence checks evidence against it)
        no_references.ContentSequence = []
        same_study, other_study = collect_evidence(evidence, no_references, study_instance_uid=study_uid)
        if same_study:
            references.CurrentRequestedProcedureEvidenceSequence = same_study
        if other_study:
            references.PertinentOtherEvidenceSequence = other_study
    if previous_versions:
        references.PredecessorDocumentsSequence = _predecessors(previous_versions)
    for element in references:
        elements[int(element.tag)] = element
    present = set(map(int, first.keys()))  # ints: a BaseTag's `in` compares in Python (~100 a document)
    for tag in parts.copied_tags(str(first.SOPClassUID)):
        if int(tag) in present:
            elements[int(tag)] = first[tag]
    acquisition = parts.acquisition_item(first, template.encodings)
    before, after = template.highdicom_item
    contributed_at = encode_element(DataElement(CONTRIBUTION_DATETIME, "DT", DT(clock())), template.encodings)
    contributed = before + contributed_at + after
    elements[int(CONTRIBUTING_EQUIPMENT_SEQUENCE)] = _sequence(
        CONTRIBUTING_EQUIPMENT_SEQUENCE, [*([acquisition] if acquisition is not None else []), contributed]
    )
    current = elements.get(int(ACCESSION_NUMBER))
    if accession_number and not (isinstance(current, DataElement) and current.value):
        elements[int(ACCESSION_NUMBER)] = DataElement(ACCESSION_NUMBER, "SH", accession_number)
    elements[0x0040A730] = _sequence_header(Tag(0x0040, 0xA730), len(content)) + content
    body = b"".join(
        value if isinstance(value, bytes) else encode_element(value, template.encodings)
        for _, value in sorted(elements.items(), key=_first)
    )
    return _preamble_and_meta(template, sop_instance_uid) + body


# --- the parts ------------------------------------------------------------------------


def _base_elements(
    first: Dataset, series_instance_uid: str, sop_instance_uid: str, instance_number: int, now: dt.datetime
) -> list[tuple[int, DataElement]]:
    """What highdicom's SOPClass constructor sets from its study-dependent arguments, with its checks; as
    (tag, element), each element the one `Dataset.__setattr__` makes (its keyword's tag and dictionary VR)."""
    patient_name = first.PatientName
    if patient_name is not None:
        try:
            check_person_name(patient_name)
        except ValueError:
            pass  # highdicom only warns
    sex = first.PatientSex
    if sex is not None and sex != "":
        sex = hd.PatientSexValues(sex).value
    values = (
        first.PatientID,
        patient_name,
        DA(first.PatientBirthDate),
        sex,
        str(first.StudyInstanceUID),
        first.AccessionNumber,
        first.StudyID,
        DA(first.StudyDate) if first.StudyDate is not None else None,
        TM(first.StudyTime) if first.StudyTime is not None else None,
        getattr(first, "ReferringPhysicianName", None),
        str(series_instance_uid),
        str(sop_instance_uid),
        instance_number,
        DA(now.date()),
        TM(now.time()),
        DA(now.date()),
        TM(now.time()),
    )
    return [(int(tag), DataElement(tag, vr, value)) for (tag, vr), value in zip(_BASE_TAGS, values)]


# _base_elements' attributes in the order of its values: (tag, dictionary VR).
_BASE_TAGS = tuple(
    (Tag(keyword), dictionary_VR(Tag(keyword)))
    for keyword in (
        "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "AccessionNumber",
        "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName", "SeriesInstanceUID", "SOPInstanceUID",
        "InstanceNumber", "InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime",
    )
)


def _first(item: tuple[int, object]) -> int:
    return item[0]


def _evidence_of_one_study(evidence: Sequence[Dataset], study_uid: str) -> bytes | None:
    """The Current Requested Procedure Evidence Sequence highdicom's `collect_evidence` makes of `evidence`
    (instances grouped by series in order of appearance, repeated instances once), packed directly; None when
    an instance is of another study or a UID is not ASCII (then highdicom's items are encoded instead)."""
    by_series: dict[str, list[bytes]] = {}
    seen: set[str] = set()
    try:
        for item in evidence:
            instance = str(item.SOPInstanceUID)
            if instance in seen:
                continue
            if str(item.StudyInstanceUID) != study_uid:
                return None
            seen.add(instance)
            by_series.setdefault(str(item.SeriesInstanceUID), []).append(
                _uid(REFERENCED_SOP_CLASS_UID, str(item.SOPClassUID)) + _uid(REFERENCED_SOP_INSTANCE_UID, instance)
            )
        series_items = [
            _sequence(REFERENCED_SOP_SEQUENCE, items) + _uid(SERIES_INSTANCE_UID, series)
            for series, items in by_series.items()
        ]
        study_item = _sequence(REFERENCED_SERIES_SEQUENCE, series_items) + _uid(STUDY_INSTANCE_UID, study_uid)
    except UnicodeEncodeError:
        return None
    return _sequence(CURRENT_EVIDENCE_SEQUENCE, [study_item])


def _uid(tag: BaseTag, value: str) -> bytes:
    """A UI element as pydicom writes it in explicit VR little endian (padded with a NUL); ASCII only."""
    encoded = value.encode("ascii")
    if len(encoded) % 2:
        encoded += b"\0"
    return struct.pack("<HH2sH", tag.group, tag.element, b"UI", len(encoded)) + encoded


def _predecessors(previous_versions: Sequence[Dataset]) -> list[Dataset]:
    """highdicom's Predecessor Documents Sequence items: instances grouped by study, then series."""
    by_series: dict[tuple[str, str], list[Dataset]] = collections.defaultdict(list)
    for previous in previous_versions:
        item = Dataset()
        item.ReferencedSOPClassUID = previous.SOPClassUID
        item.ReferencedSOPInstanceUID = previous.SOPInstanceUID
        by_series[(previous.StudyInstanceUID, previous.SeriesInstanceUID)].append(item)
    by_study: dict[str, list[Dataset]] = collections.defaultdict(list)
    for (study_uid, series_uid), items in by_series.items():
        series_item = Dataset()
        series_item.SeriesInstanceUID = series_uid
        series_item.ReferencedSOPSequence = items
        by_study[study_uid].append(series_item)
    result = []
    for study_uid, series_items in by_study.items():
        study_item = Dataset()
        study_item.StudyInstanceUID = study_uid
        study_item.ReferencedSeriesSequence = series_items
        result.append(study_item)
    return result


def _as_read(element: DataElement | RawDataElement | None) -> object:
    """What determines an element's value: its bytes as read while it is not decoded, else its value."""
    if element is None:
        return None
    if isinstance(element, RawDataElement):
        return (element.VR, element.value, element.is_implicit_VR, element.is_little_endian)
    return (element.VR, repr(element.value))


def _module_root_tags(sop_class_uid: str) -> tuple[BaseTag, ...]:
    iod = _standard_utils.get_sop_class_iod_map()[sop_class_uid]
    attributes = _standard_utils.get_module_attribute_map()
    tags: list[BaseTag] = []
    for entity in ("Patient", "Study"):
        for module in _standard_utils.get_iod_module_map()[iod]:
            if module["ie"] != entity:
                continue
            for item in attributes[module["key"]]:
                if len(item["path"]) == 0:
                    tag = tag_for_keyword(str(item["keyword"]))
                    if tag is None:
                        raise ValueError(f"No tag not found for keyword \"{item['keyword']}\".")
                    tags.append(Tag(tag))
    return tuple(tags)


def _preamble_and_meta(template: DocumentTemplate, sop_instance_uid: str) -> bytes:
    instance = DataElement(MEDIA_STORAGE_SOP_INSTANCE_UID, "UI", UID(sop_instance_uid))
    elements = template.file_meta_before + encode_element(instance, template.encodings) + template.file_meta_after
    length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(elements))
    return b"\x00" * 128 + b"DICM" + length + elements


def _sequence_header(tag: BaseTag, length: int) -> bytes:
    return struct.pack("<HH2sHI", tag.group, tag.element, b"SQ", 0, length)


def _sequence(tag: BaseTag, item_bodies: Sequence[bytes]) -> bytes:
    value = b"".join(ITEM + struct.pack("<I", len(body)) + body for body in item_bodies)
    return _sequence_header(tag, len(value)) + value


def _item_body(item: Dataset, encodings: list[str]) -> bytes:
    return b"".join(
        encode_element(item[tag], encodings) for tag in sorted(item.keys()) if not (tag.element == 0 and tag.group > 6)
    )


def encode_element(element: DataElement, encodings: list[str]) -> bytes:
    """`element` as pydicom writes it in explicit VR little endian with `encodings`."""
    vr = element.VR
    if vr in _PLAIN_VRS and not element.is_raw and not element.is_buffered:
        # A value written without the character set, 2-byte length: pydicom's writer for the VR into one buffer,
        # and the header `write_data_element` puts before it (which costs more than the value here).
        value = DicomBytesIO()
        value.is_little_endian = True
        value.is_implicit_VR = False
        if not element.is_empty:
            write, parameter = writers[vr]
            if parameter is not None:
                write(value, element, parameter)
            else:
                write(value, element)
        data = value.getvalue()
        if len(data) <= 0xFFFF and not element.is_undefined_length:
            return _SHORT_HEADER.pack(element.tag >> 16, element.tag & 0xFFFF, vr.encode("ascii"), len(data)) + data
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = False
    write_data_element(buffer, element, encodings)
    return buffer.getvalue()
