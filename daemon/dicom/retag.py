"""A stored file with its NEUROLABEL block changed, spliced: every byte outside group 0x0011 is copied as read.

Writing the whole dataset again with pydicom re-encodes every element (~1 ms of CPU for a small MR object,
more for the ~300 elements of a real one) to change a dozen. `splice_group` instead walks the top-level
element headers of the original bytes up to the private group, and puts the group's elements, encoded from
the changed dataset, between the bytes before and after it. The result is what pydicom's `save_as` writes
for files without retired group length elements (tests/dicom/test_retag.py compares them); files it cannot
splice safely (big endian, deflated, no Part 10 header) get None and are written by pydicom as before.
"""

from __future__ import annotations

import struct

from pydicom.charset import default_encoding
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.uid import UID

PREAMBLE = 128
# Explicit VR: the VRs with a 2-byte reserved field and a 4-byte length.
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF


class _Unsplicable(Exception):
    pass


def splice_group(data: bytes, dataset: Dataset, group: int) -> bytes | None:
    """`data` with the top-level elements of `group` replaced by those of `dataset` (read from `data`, then
    changed only in that group); None when the file is not one this can splice."""
    try:
        start, syntax = _dataset_start(data)
        implicit = syntax == "1.2.840.10008.1.2"
        if not implicit and not (UID(syntax).is_little_endian and not UID(syntax).is_deflated):
            return None
        first, after = _group_range(data, start, group, implicit)
    except (_Unsplicable, struct.error, IndexError, ValueError):
        return None
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = implicit
    encodings = dataset.get("SpecificCharacterSet") or default_encoding
    for tag in sorted(dataset.keys()):
        if tag.group == group and tag.element != 0:  # pydicom does not write retired group lengths either
            write_data_element(buffer, dataset.get_item(tag), encodings)
    return b"".join((data[:first], buffer.getvalue(), data[after:]))


def _dataset_start(data: bytes) -> tuple[int, str]:
    """Where the data set begins (after the file meta group) and the transfer syntax UID."""
    if data[PREAMBLE : PREAMBLE + 4] != b"DICM":
        raise _Unsplicable("no Part 10 header")
    offset = PREAMBLE + 4
    syntax = ""
    while offset + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, offset)
        if group != 0x0002:
            break
        _, length, value_at = _header(data, offset, implicit=False)
        if element == 0x0010:
            syntax = data[value_at : value_at + length].rstrip(b"\0 ").decode("ascii")
        offset = value_at + length
    if not syntax:
        raise _Unsplicable("no transfer syntax")
    return offset, syntax


def _group_range(data: bytes, offset: int, group: int, implicit: bool) -> tuple[int, int]:
    """(first byte of `group`'s top-level elements, first byte after them): where they are or would be."""
    first = -1
    while offset < len(data):
        tag_group, _ = struct.unpack_from("<HH", data, offset)
        if tag_group > group:
            break
        end = _element_end(data, offset, implicit)
        if tag_group == group and first < 0:
            first = offset
        offset = end
    return (offset if first < 0 else first), offset


def _header(data: bytes, offset: int, implicit: bool) -> tuple[bytes, int, int]:
    """(VR, or b"" when implicit; value length; offset of the value) of the element header at `offset`."""
    if implicit:
        (length,) = struct.unpack_from("<I", data, offset + 4)
        return b"", length, offset + 8
    vr = data[offset + 4 : offset + 6]
    if vr in _LONG_VRS:
        (length,) = struct.unpack_from("<I", data, offset + 8)
        return vr, length, offset + 12
    (length,) = struct.unpack_from("<H", data, offset + 6)
    return vr, length, offset + 8


def _element_end(data: bytes, offset: int, implicit: bool) -> int:
    """The offset just after the element that starts at `offset` (nested items walked when undefined)."""
    vr, length, value_at = _header(data, offset, implicit)
    if length != _UNDEFINED:
        return value_at + length
    # An undefined length: a sequence (or encapsulated data): items up to the sequence delimiter.
    position = value_at
    while True:
        (tag,) = struct.unpack_from("<I", data, position)
        tag = ((tag & 0xFFFF) << 16) | (tag >> 16)
        (item_length,) = struct.unpack_from("<I", data, position + 4)
        position += 8
        if tag == _SEQUENCE_END:
            return position
        if tag != _ITEM:
            raise _Unsplicable(f"unexpected tag {tag:08X} in a sequence")
        if item_length != _UNDEFINED:
            position += item_length
            continue
        while True:  # an item of undefined length: elements up to the item delimiter
            (inner,) = struct.unpack_from("<I", data, position)
            inner = ((inner & 0xFFFF) << 16) | (inner >> 16)
            if inner == _ITEM_END:
                position += 8
                break
            position = _element_end(data, position, implicit or vr == b"UN")
