"""The NEUROLABEL private block: a study's labels as private tags in each of its instances (pure).

Private creator "NEUROLABEL" in group 0x0011. pydicom reserves the first free
block (usually (0011,0010), giving elements (0011,10xx)); readers must find
the block through its creator, never assume the 0x10 slot. The element
offsets inside the block (docs/dicom-labels.md has the table):

    0x01 LO    tag map version ("1")
    0x02 LO    label keys, multi-valued, in LABEL_KEYS order
    0x03 US    label bits (0/1), multi-valued, same order
    0x04 FD    probabilities, multi-valued, same order
    0x05 LO    model name
    0x06 LO    model version
    0x07 LO    accession number of the labelled report (absent if none)
    0x08 DT    when the labels were made (UTC)
    0x09 CS    label status: ACTIVE, or WITHDRAWN (then 0x03 and 0x04 are absent)

Implicit VR files lose the value representations, so the reader decodes
elements that come back as UN with the VRs of this map.

`encode_new_block` gives the bytes pydicom writes for a new block in a file
without group 0x0011 (a study's first write-back), without building it in a
dataset; daemon/dicom/retag.py inserts them (tests/dicom/test_retag.py
compares the file with pydicom's).
"""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, PrivateBlock
from pydicom.tag import Tag

from daemon.labels import LABEL_KEYS, LabelRecord

GROUP = 0x0011
PRIVATE_CREATOR = "NEUROLABEL"
TAG_MAP_VERSION = "1"

VERSION = 0x01
LABEL_KEYS_ELEMENT = 0x02
LABEL_BITS = 0x03
PROBABILITIES = 0x04
MODEL_NAME = 0x05
MODEL_VERSION = 0x06
ACCESSION_NUMBER = 0x07
LABELLED_AT = 0x08
STATUS = 0x09

# The block's slot in a group without other private creators: creator at (0011,0010), elements at (0011,10xx).
FIRST_BLOCK = 0x10
_EXPLICIT_HEADER = struct.Struct("<HH2sH")  # little endian; every VR of the block has a 2-byte length
_IMPLICIT_HEADER = struct.Struct("<HHI")

STATUS_ACTIVE = "ACTIVE"
STATUS_WITHDRAWN = "WITHDRAWN"

VRS: Mapping[int, str] = {
    VERSION: "LO",
    LABEL_KEYS_ELEMENT: "LO",
    LABEL_BITS: "US",
    PROBABILITIES: "FD",
    MODEL_NAME: "LO",
    MODEL_VERSION: "LO",
    ACCESSION_NUMBER: "LO",
    LABELLED_AT: "DT",
    STATUS: "CS",
}


class LabelTagError(ValueError):
    """A NEUROLABEL block that is present but cannot be read (wrong keys, wrong counts)."""


@dataclass(frozen=True)
class LabelTags:
    """What the private block says: ACTIVE labels (record), or WITHDRAWN ones (record without labels)."""

    status: str
    record: LabelRecord | None  # None when withdrawn
    study_instance_uid: str
    model: str
    accession_number: str | None
    labelled_at: dt.datetime


def split_model(model: str) -> tuple[str, str]:
    """Split "name:version" into (name, version); a model without a version gets ""."""
    name, _, version = model.rpartition(":")
    return (name, version) if name else (model, "")


def join_model(name: str, version: str) -> str:
    return f"{name}:{version}" if version else name


def as_utc(moment: dt.datetime) -> dt.datetime:
    """Naive datetimes (SQLite gives them back) are UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)


def format_dt(moment: dt.datetime) -> str:
    return as_utc(moment).strftime("%Y%m%d%H%M%S.%f+0000")


def parse_dt(text: str) -> dt.datetime:
    text = text.strip()
    for pattern in ("%Y%m%d%H%M%S.%f%z", "%Y%m%d%H%M%S%z", "%Y%m%d%H%M%S.%f", "%Y%m%d%H%M%S"):
        try:
            return as_utc(dt.datetime.strptime(text, pattern))
        except ValueError:
            continue
    raise LabelTagError(f"labelled time {text!r} is not a DICOM DT")


def apply_label_tags(dataset: Dataset, record: LabelRecord) -> None:
    """Write (or replace) the NEUROLABEL block with the labels of `record`."""
    block = _fresh_block(dataset)
    for offset, vr, value in block_values(record):
        block.add_new(offset, vr, value)


def apply_withdrawn_tags(dataset: Dataset, record: LabelRecord, withdrawn_at: dt.datetime) -> None:
    """Replace the block with a WITHDRAWN marker: no label bits or probabilities, the withdrawn model kept."""
    block = _fresh_block(dataset)
    for offset, vr, value in block_values(record, withdrawn_at):
        block.add_new(offset, vr, value)


def block_values(record: LabelRecord, withdrawn_at: dt.datetime | None = None) -> list[tuple[int, str, object]]:
    """(offset, VR, value) of each element of the block for `record`, or of its WITHDRAWN marker, in order."""
    name, version = split_model(record.model)
    values: list[tuple[int, str, object]] = [(VERSION, "LO", TAG_MAP_VERSION)]
    if withdrawn_at is None:
        values += [
            (LABEL_KEYS_ELEMENT, "LO", list(LABEL_KEYS)),
            (LABEL_BITS, "US", [int(record.labels[key]) for key in LABEL_KEYS]),
            (PROBABILITIES, "FD", [float(record.probabilities[key]) for key in LABEL_KEYS]),
        ]
    values += [(MODEL_NAME, "LO", name), (MODEL_VERSION, "LO", version)]
    if record.accession_number:
        values.append((ACCESSION_NUMBER, "LO", record.accession_number))
    values += [
        (LABELLED_AT, "DT", format_dt(record.labelled_at if withdrawn_at is None else withdrawn_at)),
        (STATUS, "CS", STATUS_ACTIVE if withdrawn_at is None else STATUS_WITHDRAWN),
    ]
    return values


def encode_new_block(record: LabelRecord, withdrawn_at: dt.datetime | None, implicit: bool) -> bytes | None:
    """The block's elements as pydicom writes them (little endian; `implicit` VR or explicit) after
    `apply_label_tags` (or `apply_withdrawn_tags`) on a dataset without any element of group 0x0011: the
    creator in the block's first slot (0011,0010), its elements at (0011,10xx). None when a text value is not
    printable ASCII (its bytes then depend on the character set): pydicom's writer then."""
    elements = [(0x0010, "LO", PRIVATE_CREATOR)] + [
        (FIRST_BLOCK << 8 | offset, vr, value) for offset, vr, value in block_values(record, withdrawn_at)
    ]
    parts: list[bytes] = []
    for element, vr, value in elements:
        if vr == "US":
            data = struct.pack(f"<{len(value)}H", *value)  # type: ignore[arg-type]
        elif vr == "FD":
            data = struct.pack(f"<{len(value)}d", *value)  # type: ignore[arg-type]
        else:
            text = "\\".join(value) if isinstance(value, list) else str(value)
            if not (text.isascii() and text.isprintable()):
                return None
            data = text.encode("ascii")
            if len(data) % 2:
                data += b" "
        if implicit:
            parts.append(_IMPLICIT_HEADER.pack(GROUP, element, len(data)))
        else:
            parts.append(_EXPLICIT_HEADER.pack(GROUP, element, vr.encode("ascii"), len(data)))
        parts.append(data)
    return b"".join(parts)


def remove_label_tags(dataset: Dataset) -> bool:
    """Delete the NEUROLABEL block (creator included); True if there was one."""
    block = _find_block(dataset)
    if block is None:
        return False
    _clear_block(dataset, block)
    del dataset[Tag(GROUP, block.block_start >> 8)]
    return True


def read_label_tags(dataset: Dataset) -> LabelRecord | None:
    """The ACTIVE labels the block carries; None when there is no block or the labels were withdrawn."""
    tags = read_label_block(dataset)
    return tags.record if tags is not None else None


def read_label_block(dataset: Dataset) -> LabelTags | None:
    """Everything the block says, withdrawn or not; None when there is no NEUROLABEL block."""
    block = _find_block(dataset)
    if block is None:
        return None
    values = {offset: _value(dataset, block, offset) for offset in VRS}
    status = _single(values[STATUS]) or STATUS_ACTIVE
    if status not in (STATUS_ACTIVE, STATUS_WITHDRAWN):
        raise LabelTagError(f"unknown label status {status!r}")
    labelled_text = _single(values[LABELLED_AT])
    if not labelled_text:
        raise LabelTagError("labelled time missing")
    model = join_model(_single(values[MODEL_NAME]) or "", _single(values[MODEL_VERSION]) or "")
    accession = _single(values[ACCESSION_NUMBER]) or None
    study_uid = str(dataset.get("StudyInstanceUID", ""))
    labelled_at = parse_dt(labelled_text)
    record = None
    if status == STATUS_ACTIVE:
        keys = [str(key) for key in values[LABEL_KEYS_ELEMENT]]
        bits = [int(bit) for bit in values[LABEL_BITS]]
        probabilities = [float(p) for p in values[PROBABILITIES]]
        if sorted(keys) != sorted(LABEL_KEYS):
            raise LabelTagError(f"label keys {keys} do not match {list(LABEL_KEYS)}")
        if not len(keys) == len(bits) == len(probabilities):
            raise LabelTagError("label keys, bits and probabilities differ in count")
        if any(bit not in (0, 1) for bit in bits):
            raise LabelTagError(f"label bits must be 0 or 1, got {bits}")
        record = LabelRecord(
            study_instance_uid=study_uid,
            accession_number=accession,
            labels={key: bits[keys.index(key)] for key in LABEL_KEYS},
            probabilities={key: probabilities[keys.index(key)] for key in LABEL_KEYS},
            model=model,
            labelled_at=labelled_at,
        )
    return LabelTags(status, record, study_uid, model, accession, labelled_at)


def carries_labels(dataset: Dataset, record: LabelRecord, *, withdrawn_at: dt.datetime | None = None) -> bool:
    """True if the block already says exactly what apply_label_tags (or apply_withdrawn_tags) would write."""
    try:
        tags = read_label_block(dataset)
    except LabelTagError:
        return False
    if tags is None:
        return False
    if withdrawn_at is not None:
        return (
            tags.status == STATUS_WITHDRAWN
            and tags.model == record.model
            and tags.accession_number == (record.accession_number or None)
            and tags.labelled_at == as_utc(withdrawn_at)
        )
    found = tags.record
    return (
        found is not None
        and found.model == record.model
        and found.accession_number == (record.accession_number or None)
        and found.labelled_at == as_utc(record.labelled_at)
        and all(int(found.labels[key]) == int(record.labels[key]) for key in LABEL_KEYS)
        and all(float(found.probabilities[key]) == float(record.probabilities[key]) for key in LABEL_KEYS)
    )


# --- block access -------------------------------------------------------------------


def _find_block(dataset: Dataset) -> PrivateBlock | None:
    try:
        return dataset.private_block(GROUP, PRIVATE_CREATOR)
    except KeyError:
        return None


def _fresh_block(dataset: Dataset) -> PrivateBlock:
    block = _find_block(dataset)
    if block is not None:
        _clear_block(dataset, block)
        return block
    return dataset.private_block(GROUP, PRIVATE_CREATOR, create=True)


def _clear_block(dataset: Dataset, block: PrivateBlock) -> None:
    for offset in range(0x100):
        tag = block.get_tag(offset)
        if tag in dataset:
            del dataset[tag]


def _value(dataset: Dataset, block: PrivateBlock, offset: int) -> list[object]:
    """The element's values as a list ([] if absent), decoding UN (implicit VR files) with the map's VR."""
    tag = block.get_tag(offset)
    if tag not in dataset:
        return []
    element: DataElement = dataset[tag]
    value = element.value
    if element.VR == "UN" and isinstance(value, (bytes, bytearray)):
        return _decode_un(bytes(value), VRS[offset])
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value]


def _decode_un(raw: bytes, vr: str) -> list[object]:
    # Implicit VR is always little endian.
    if vr == "US":
        return list(struct.unpack(f"<{len(raw) // 2}H", raw[: len(raw) // 2 * 2]))
    if vr == "FD":
        return list(struct.unpack(f"<{len(raw) // 8}d", raw[: len(raw) // 8 * 8]))
    text = raw.decode("ascii", errors="replace").rstrip("\x00 ")
    return [part.strip() for part in text.split("\\")] if text else []


def _single(values: list[object]) -> str:
    return str(values[0]).strip() if values else ""
