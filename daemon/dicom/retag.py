"""A stored file with its NEUROLABEL block changed, spliced: every byte outside group 0x0011 is copied as read.

Writing the whole dataset again with pydicom re-encodes every element (~1 ms of CPU for a small MR object,
more for the ~300 elements of a real one) to change a dozen. `splice_group` instead walks the top-level
elements of the original bytes up to the private group with pydicom's own element reader, and puts the group's elements, encoded from
the changed dataset, between the bytes before and after it. The result is what pydicom's `save_as` writes
for files without retired group length elements (tests/dicom/test_retag.py compares them); files it cannot
splice safely (big endian, deflated, no Part 10 header) get None and are written by pydicom as before.
`insert_group` puts already encoded elements where a group absent from the file goes (a first write-back:
daemon/dicom/private_tags.py encodes the block without pydicom).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from io import BytesIO

from pydicom.charset import default_encoding
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import data_element_generator
from pydicom.filewriter import write_data_element
from pydicom.uid import UID, ImplicitVRLittleEndian

PREAMBLE = 128
META_GROUP = 0x0002
TRANSFER_SYNTAX_TAG = 0x00020010


def splice_group(data: bytes, dataset: Dataset, group: int) -> bytes | None:
    """`data` with the top-level elements of `group` replaced by those of `dataset` (read from `data`, then
    changed only in that group); None when the file is not one this can splice."""
    if data[PREAMBLE : PREAMBLE + 4] != b"DICM":
        return None
    try:
        first, after, implicit = _group_range_of(data, group)
    except Exception:  # noqa: BLE001 - whatever the walk cannot read, pydicom's full write handles (or reports)
        return None
    if first is None:
        return None
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = implicit
    encodings = dataset.get("SpecificCharacterSet") or default_encoding
    # The group's tags only, compared as ints (sorting every tag of the dataset with BaseTag's Python `<` cost
    # more than the splice); not its group length: pydicom does not write retired group lengths either.
    tags = sorted((tag for tag in dataset.keys() if tag >> 16 == group and tag & 0xFFFF), key=int)
    for tag in tags:
        write_data_element(buffer, dataset.get_item(tag), encodings)
    return b"".join((data[:first], buffer.getvalue(), data[after:]))


def insert_group(data: bytes, group: int, encode: Callable[[bool], bytes | None]) -> bytes | None:
    """`data` with the elements `encode(implicit VR?)` gives put where `group` goes, when the file has no element
    of `group` yet (a first write-back: nothing to decode or keep there); None when it has, when it cannot be
    spliced, or when `encode` gives None."""
    if data[PREAMBLE : PREAMBLE + 4] != b"DICM":
        return None
    try:
        first, after, implicit = _group_range_of(data, group)
    except Exception:  # noqa: BLE001 - as splice_group: pydicom's reader and writer then
        return None
    if first is None or first != after:
        return None
    encoded = encode(implicit)
    return None if encoded is None else b"".join((data[:first], encoded, data[first:]))


def _group_range_of(data: bytes, group: int) -> tuple[int | None, int, bool]:
    """`_group_range` of `data`: walked with struct where every element up to `group` has a defined length (the
    usual file: pydicom's reader costs ~0.5 ms a file there), else with pydicom's reader."""
    try:
        return _walk(data, group)
    except _CannotWalk:
        return _group_range(BytesIO(data), group)


class _CannotWalk(Exception):
    """An element `_walk` does not read (undefined length, truncated): `_group_range` reads the file instead."""


# Explicit VR little endian: the VRs with two reserved bytes and a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset((b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"))
_SHORT_VRS = frozenset((b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN",
                        b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"))
_TAG = struct.Struct("<HH")
_SHORT = struct.Struct("<H")
_LONG = struct.Struct("<L")


def _walk(data: bytes, group: int) -> tuple[int | None, int, bool]:
    """`_group_range` by reading the tags and lengths of the top-level elements with struct."""
    end = len(data)
    position = PREAMBLE + 4
    syntax = ""
    while position + 8 <= end:  # the meta group: always explicit VR little endian
        element_group, element = _TAG.unpack_from(data, position)
        if element_group != META_GROUP:
            break
        position, value_at = _explicit_element(data, position)
        if (element_group << 16 | element) == TRANSFER_SYNTAX_TAG:
            syntax = data[value_at:position].rstrip(b"\0 ").decode("ascii")
    implicit = syntax == ImplicitVRLittleEndian
    if not syntax or not (implicit or (UID(syntax).is_little_endian and not UID(syntax).is_deflated)):
        return None, 0, implicit
    first: int | None = None
    while position + 8 <= end:
        element_group = _SHORT.unpack_from(data, position)[0]
        if element_group > group:
            return (position if first is None else first), position, implicit
        if element_group == group and first is None:
            first = position
        if implicit:
            length = _LONG.unpack_from(data, position + 4)[0]
            if length == 0xFFFFFFFF:
                raise _CannotWalk
            position += 8 + length
        else:
            position = _explicit_element(data, position)[0]
        if position > end:
            raise _CannotWalk
    if position != end:
        raise _CannotWalk
    return (position if first is None else first), position, implicit


def _explicit_element(data: bytes, position: int) -> tuple[int, int]:
    """(where the next element starts, where this one's value starts) for the explicit VR element at `position`."""
    vr = data[position + 4 : position + 6]
    if vr in _LONG_VRS:
        length = _LONG.unpack_from(data, position + 8)[0]
        value_at = position + 12
    elif vr not in _SHORT_VRS:  # pydicom has its own ways with unknown VRs
        raise _CannotWalk
    else:
        length = _SHORT.unpack_from(data, position + 6)[0]
        value_at = position + 8
    if length == 0xFFFFFFFF:
        raise _CannotWalk
    return value_at + length, value_at


def _group_range(fp: BytesIO, group: int) -> tuple[int | None, int, bool]:
    """(first byte of `group`'s top-level elements, first byte after them, implicit VR?): where they are or
    would be; first is None for a transfer syntax this cannot splice (big endian, deflated, none)."""
    fp.seek(PREAMBLE + 4)
    syntax = ""
    for raw in data_element_generator(fp, False, True, stop_when=lambda tag, _vr, _length: tag.group != META_GROUP):
        if raw.tag == TRANSFER_SYNTAX_TAG:
            syntax = bytes(raw.value or b"").rstrip(b"\0 ").decode("ascii")
    implicit = syntax == ImplicitVRLittleEndian
    if not syntax or not (implicit or (UID(syntax).is_little_endian and not UID(syntax).is_deflated)):
        return None, 0, implicit
    # The reader stops before the first element past `group`; its position after each element is where
    # the next one starts.
    position = fp.tell()
    first: int | None = None
    for raw in data_element_generator(fp, implicit, True, stop_when=lambda tag, _vr, _length: tag.group > group):
        if raw.tag.group == group and first is None:
            first = position
        position = fp.tell()
    return (position if first is None else first), position, implicit
