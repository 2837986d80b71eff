"""Label SRs encoded fast: the content tree built with highdicom once per model, the per-study values filled in.

`build_label_sr` (daemon/dicom/sr.py) builds the whole document with highdicom
for every study: ~100 ms of CPU, most of it highdicom copying and re-parsing
the ~150 datasets of the TID 1500 content tree and pydicom encoding them.
That tree is the same for every study labelled by one model except for a few
values. `SrEncoder` therefore

1. builds the content tree once per (model, active or withdrawn, character
   set) with `label_content` (highdicom), and once more with every finding's
   evaluation flipped, and encodes it (pydicom) into a template: bytes with
   holes for the per-study values: the group's Tracking UID and Observation
   DateTime, each finding's evaluation code (Present or Absent: both encodings
   taken from highdicom's two trees) and each probability's Numeric Value and
   Floating Point Value;
2. per study, fills the holes and encodes the document around the content
   from a document template (daemon/dicom/sr_document.py: highdicom's
   document for a placeholder study, its study-independent elements kept
   encoded; the patient and study attributes, evidence, predecessor, UIDs
   and times encoded per study as highdicom derives them), checked when it
   is made to encode the placeholder study as highdicom's document does.

The result is byte for byte what `build_label_sr(...).save_as(...)` writes
(tests/dicom/test_sr_template.py compares them over label sets, probabilities,
evidence, predecessors, withdrawals and character sets). Sequences and items
get defined lengths as pydicom writes them; a template is checked, when it is
made, to have every hole it needs, so a highdicom whose tree looks different
fails at once instead of writing a different document.
"""

from __future__ import annotations

import collections
import datetime as dt
import io
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import DS, DT

from daemon.dicom.private_tags import format_dt
from daemon.dicom.sr import (
    FINDINGS,
    MEASUREMENT_GROUP,
    SrIdentity,
    complete_evidence,
    label_content,
    label_document,
    tracking_uid,
)
from daemon.dicom.sr_document import (
    ITEM,
    DocumentParts,
    DocumentTemplate,
    encode_document,
    encode_element,
    make_template,
)
from daemon.labels import LABEL_KEYS, LabelRecord

CONTENT_SEQUENCE = Tag(0x0040, 0xA730)
CONCEPT_CODE_SEQUENCE = Tag(0x0040, 0xA168)
MEASURED_VALUE_SEQUENCE = Tag(0x0040, 0xA300)
NUMERIC_VALUE = Tag(0x0040, 0xA30A)
FLOATING_POINT_VALUE = Tag(0x0040, 0xA161)
OBSERVATION_DATETIME = Tag(0x0040, 0xA032)
UID_VALUE = Tag(0x0040, 0xA124)
TRACKING_UNIQUE_IDENTIFIER = ("112040", "DCM")
# Templates kept: one per model and state in use (a model upgrade adds one).
DEFAULT_CAPACITY = 16
# The study the templates are built for; its values are holes.
_PLACEHOLDER_STUDY = "2.25.1"
_PLACEHOLDER_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage


@dataclass(frozen=True)
class _Hole:
    name: str


@dataclass(frozen=True)
class _Sequence:
    """A sequence element with a hole somewhere below it: encoded when filled (its lengths change)."""

    header: bytes  # tag, "SQ", two reserved bytes; the length follows
    items: tuple[tuple[_Node, ...], ...]


_Node = bytes | _Hole | _Sequence


@dataclass(frozen=True)
class _Template:
    document: DocumentTemplate  # the document around the content (daemon/dicom/sr_document.py)
    content: _Sequence  # the Content Sequence with holes
    codes: Mapping[str, Mapping[int, bytes]]  # finding -> label bit -> its encoded Concept Code Sequence
    encodings: list[str]


class SrEncoder:
    """Encodes label SRs (Part 10 bytes) from per-model templates; safe to share between threads."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, clock: Callable[[], dt.datetime] = dt.datetime.now) -> None:
        self._capacity = capacity
        self._clock = clock  # read as highdicom reads it: local time for the creation, content and contribution times
        self._templates: collections.OrderedDict[tuple[str, bool, str], _Template] = collections.OrderedDict()
        self._parts = DocumentParts()
        self._lock = threading.Lock()

    def encode(
        self,
        record: LabelRecord,
        evidence: Sequence[Dataset],
        identity: SrIdentity,
        *,
        previous_versions: Sequence[Dataset] = (),
        withdrawn_at: dt.datetime | None = None,
    ) -> bytes:
        """What `build_label_sr(record, evidence, identity, ...)` saved with enforce_file_format writes."""
        if not evidence:
            raise ValueError("an SR needs at least one instance of the study as evidence")
        charset = evidence[0].get("SpecificCharacterSet")
        template = self._template(record.model, withdrawn_at is not None, charset)
        values = _values(template, record, withdrawn_at)
        content = b"".join(_render_items(template.content.items, values))
        return encode_document(
            template.document,
            self._parts,
            evidence=complete_evidence(evidence),
            content=content,
            series_instance_uid=identity.series_instance_uid,
            sop_instance_uid=identity.sop_instance_uid,
            instance_number=identity.instance_number,
            accession_number=record.accession_number,
            previous_versions=previous_versions,
            clock=self._clock,
        )

    def _template(self, model: str, withdrawn: bool, charset: object) -> _Template:
        key = (model, withdrawn, repr(charset))
        with self._lock:
            found = self._templates.get(key)
            if found is not None:
                self._templates.move_to_end(key)
                return found
        made = _make_template(model, withdrawn, charset)
        with self._lock:
            self._templates[key] = made
            while len(self._templates) > self._capacity:
                self._templates.popitem(last=False)
        return made


# --- making a template ------------------------------------------------------------------


def _make_template(model: str, withdrawn: bool, charset: object) -> _Template:
    encodings = convert_encodings(charset) if charset else [default_encoding]
    records = [_placeholder(model, bit) for bit in (1, 0)]
    withdrawn_at = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc) if withdrawn else None
    trees = [label_content(record, withdrawn_at=withdrawn_at) for record in records]
    found = [_holes(tree, withdrawn) for tree in trees]
    expected = 2 + (0 if withdrawn else 3 * len(LABEL_KEYS))
    names = {name for name, item, tag in found[0] if tag in item}
    if len(names) != expected or len(found[0]) != expected:
        raise RuntimeError(f"the SR content tree of {model!r} has {len(names)} of the {expected} values to fill")
    holes = {(id(item), tag): name for name, item, tag in found[0]}
    codes: dict[str, dict[int, bytes]] = {}
    for bit, holes_of_tree in zip((1, 0), found):
        for name, item, tag in holes_of_tree:
            if tag == CONCEPT_CODE_SEQUENCE:
                codes.setdefault(name, {})[bit] = encode_element(item[tag], encodings)
    content = trees[0]
    root = Dataset()
    for element in content:
        if element.tag != CONTENT_SEQUENCE:
            root.add(element)
    compiled = _compile_element(content[CONTENT_SEQUENCE], holes, encodings)
    if not isinstance(compiled, _Sequence):
        raise RuntimeError("the SR content sequence has no values to fill")
    return _Template(_document_template(records[0], root, charset, encodings), compiled, codes, encodings)


def _document_template(record: LabelRecord, root: Dataset, charset: object, encodings: list[str]) -> DocumentTemplate:
    """The document's template from highdicom's document around `root` (the root content item, its Content
    Sequence empty) for a placeholder study; checked to encode, for that study, as highdicom's document does."""
    evidence = Dataset()
    if charset is not None:
        evidence.SpecificCharacterSet = charset
    evidence.SOPClassUID = _PLACEHOLDER_SOP_CLASS
    evidence.SOPInstanceUID = f"{_PLACEHOLDER_STUDY}.1.1"
    evidence.SeriesInstanceUID = f"{_PLACEHOLDER_STUDY}.1"
    evidence.StudyInstanceUID = _PLACEHOLDER_STUDY
    identity = SrIdentity(f"{_PLACEHOLDER_STUDY}.2", f"{_PLACEHOLDER_STUDY}.2.1", 1)
    bare = Dataset()
    bare.update(root)
    bare.ContentSequence = DicomSequence()
    reference = label_document(record, [evidence], identity, bare)
    if reference.get("SpecificCharacterSet") != charset:
        raise RuntimeError("highdicom gave the SR another character set than its evidence's")
    template = make_template(reference, encodings)
    # The clock's values as highdicom set them, so that the two encodings can be compared.
    created = reference.InstanceCreationDate
    if reference.ContentDate != created or reference.ContentTime != reference.InstanceCreationTime:
        raise RuntimeError("highdicom's SR has content and creation times that differ")
    stamps = iter((
        dt.datetime.combine(created, reference.InstanceCreationTime),
        DT(reference.ContributingEquipmentSequence[-1].ContributionDateTime),
    ))
    ours = encode_document(
        template, DocumentParts(), evidence=complete_evidence([evidence]), content=b"",
        series_instance_uid=identity.series_instance_uid, sop_instance_uid=identity.sop_instance_uid,
        instance_number=identity.instance_number, accession_number=record.accession_number,
        clock=lambda: next(stamps),
    )
    buffer = io.BytesIO()
    reference.save_as(buffer, enforce_file_format=True)
    if ours != buffer.getvalue():
        raise RuntimeError("the SR document template does not encode as highdicom's document")
    return template


def _placeholder(model: str, bit: int) -> LabelRecord:
    return LabelRecord(
        study_instance_uid=_PLACEHOLDER_STUDY,
        accession_number=None,
        labels={key: bit for key in LABEL_KEYS},
        probabilities={key: 0.5 for key in LABEL_KEYS},
        model=model,
        labelled_at=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc),
    )


def _holes(root: Dataset, withdrawn: bool) -> list[tuple[str, Dataset, BaseTag]]:
    """(name, dataset, tag) of every per-study value in the content tree: the label group's Observation DateTime
    and Tracking UID, and (unless withdrawn) each finding's code, Numeric Value and Floating Point Value."""
    found: list[tuple[str, Dataset, BaseTag]] = []
    for item in _walk(root.get("ContentSequence", [])):
        name = _concept(item)
        if item.get("ValueType") == "CONTAINER" and name == (MEASUREMENT_GROUP.value, MEASUREMENT_GROUP.scheme):
            found.append(("observed", item, OBSERVATION_DATETIME))
        elif item.get("ValueType") == "UIDREF" and name == TRACKING_UNIQUE_IDENTIFIER:
            found.append(("tracking", item, UID_VALUE))
        elif not withdrawn and (key := _finding(name)) is not None:
            if item.get("ValueType") == "CODE":
                found.append((f"code:{key}", item, CONCEPT_CODE_SEQUENCE))
            elif item.get("ValueType") == "NUM":
                measured = item[MEASURED_VALUE_SEQUENCE].value[0]
                found.append((f"number:{key}", measured, NUMERIC_VALUE))
                found.append((f"float:{key}", measured, FLOATING_POINT_VALUE))
    return found


def _walk(items: Sequence[Dataset]) -> list[Dataset]:
    result: list[Dataset] = []
    for item in items:
        result.append(item)
        result += _walk(item.get("ContentSequence", []))
    return result


def _concept(item: Dataset) -> tuple[str, str] | None:
    names = item.get("ConceptNameCodeSequence")
    if not names:
        return None
    return str(names[0].CodeValue), str(names[0].CodingSchemeDesignator)


def _finding(name: tuple[str, str] | None) -> str | None:
    for key, concept in FINDINGS.items():
        if name == (concept.value, concept.scheme):
            return key
    return None


def _compile_element(element: DataElement, holes: Mapping[tuple[int, BaseTag], str], encodings: list[str]) -> _Node:
    if element.VR == "SQ" and _has_hole(element, holes):
        header = struct.pack("<HH", element.tag.group, element.tag.element) + b"SQ\x00\x00"
        return _Sequence(header, tuple(_compile_dataset(item, holes, encodings) for item in element.value))
    return encode_element(element, encodings)


def _compile_dataset(
    dataset: Dataset, holes: Mapping[tuple[int, BaseTag], str], encodings: list[str]
) -> tuple[_Node, ...]:
    """The dataset's elements in tag order as pydicom writes them, holes and sequences holding holes kept apart."""
    if "SpecificCharacterSet" in dataset:
        raise RuntimeError("a content item with its own character set cannot be templated")
    nodes: list[_Node] = []
    for tag in sorted(dataset.keys()):
        if tag.element == 0 and tag.group > 6:
            continue  # pydicom does not write retired group lengths
        hole = holes.get((id(dataset), tag))
        node: _Node = _Hole(hole) if hole is not None else _compile_element(dataset[tag], holes, encodings)
        if isinstance(node, bytes) and nodes and isinstance(nodes[-1], bytes):
            nodes[-1] += node
        else:
            nodes.append(node)
    return tuple(nodes)


def _has_hole(element: DataElement, holes: Mapping[tuple[int, BaseTag], str]) -> bool:
    for item in element.value:
        for tag in item.keys():
            if (id(item), tag) in holes:
                return True
            if item[tag].VR == "SQ" and _has_hole(item[tag], holes):
                return True
    return False


# --- filling one in ---------------------------------------------------------------------


def _values(template: _Template, record: LabelRecord, withdrawn_at: dt.datetime | None) -> dict[str, bytes]:
    observed = withdrawn_at if withdrawn_at is not None else record.labelled_at
    values = {
        "observed": _text_element(OBSERVATION_DATETIME, b"DT", format_dt(observed), b" "),
        "tracking": _text_element(UID_VALUE, b"UI", tracking_uid(record.study_instance_uid), b"\0"),
    }
    if withdrawn_at is None:
        for key in LABEL_KEYS:
            probability = float(record.probabilities[key])
            # As highdicom's NumContentItem writes a float: the DS text, and the exact double beside it.
            values[f"number:{key}"] = _text_element(NUMERIC_VALUE, b"DS", str(DS(probability, auto_format=True)), b" ")
            values[f"float:{key}"] = _FD_HEADER + struct.pack("<d", probability)
            values[f"code:{key}"] = template.codes[f"code:{key}"][1 if int(record.labels[key]) else 0]
    return values


# Floating Point Value (FD, 8 bytes) as explicit VR little endian writes its header.
_FD_HEADER = struct.pack("<HH2sH", FLOATING_POINT_VALUE.group, FLOATING_POINT_VALUE.element, b"FD", 8)


def _text_element(tag: BaseTag, vr: bytes, text: str, padding: bytes) -> bytes:
    """A short ASCII element (DT, UI, DS) as pydicom writes it in explicit VR little endian: padded to even
    length (UI with a NUL, the others with a space). The values filled in here are ASCII in every character
    set (digits, dots, signs, exponents), so the template's encodings do not change them."""
    value = text.encode("ascii")
    if len(value) % 2:
        value += padding
    return struct.pack("<HH2sH", tag.group, tag.element, vr, len(value)) + value


def _render(nodes: tuple[_Node, ...], values: Mapping[str, bytes]) -> list[bytes]:
    parts: list[bytes] = []
    for node in nodes:
        if isinstance(node, bytes):
            parts.append(node)
        elif isinstance(node, _Hole):
            parts.append(values[node.name])
        else:
            body = b"".join(_render_items(node.items, values))
            parts += (node.header, struct.pack("<I", len(body)), body)
    return parts


def _render_items(items: tuple[tuple[_Node, ...], ...], values: Mapping[str, bytes]) -> list[bytes]:
    parts: list[bytes] = []
    for item in items:
        body = b"".join(_render(item, values))
        parts += (ITEM, struct.pack("<I", len(body)), body)
    return parts

