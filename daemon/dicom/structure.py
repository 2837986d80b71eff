"""Whether a received data set is whole: every element fits, every sequence and item ends (pure).

The index reads only the header of a data set (daemon/dicom/index.py), so a data set cut short after
its header, or with an element whose length runs past the end, would be stored and acknowledged, and
fail later when written back. `check_structure` walks the element headers of the whole data set -
tag, VR, length - without decoding or copying a value, follows sequences and encapsulated pixel data of
undefined length to their delimiters, and raises `Malformed` naming what does not fit. Deflated data
sets are not walked (their length says nothing until inflated). The same walk hands back the raw values of
the top-level elements the caller asks for (the index's header: one pass over the data set, not two).
"""

from __future__ import annotations

import struct

from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from daemon.dicom.index import MalformedDataset

# VRs with a 4-byte length in explicit VR encoding (PS3.5 7.1.2).
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
ITEM = 0xFFFEE000
ITEM_END = 0xFFFEE00D
SEQUENCE_END = 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
# Sequences nest this deep at most (real data sets: a handful).
MAX_DEPTH = 32
# Up to this many bytes after the last element are tolerated (some writers pad to an even length).
TRAILING_SLACK = 7


class Malformed(MalformedDataset):
    """The data set's structure does not hold; the message names the element, never a value."""


def check_data_set(
    data: bytes | memoryview, transfer_syntax_uid: str, collect: frozenset[int] = frozenset()
) -> dict[int, bytes] | None:
    """check_structure in the encoding of `transfer_syntax_uid`; None, unchecked, for a deflated data set (or an
    unknown transfer syntax)."""
    syntax = UID(transfer_syntax_uid)
    if syntax == DeflatedExplicitVRLittleEndian or not syntax.is_transfer_syntax:
        return None
    return check_structure(data, implicit_vr=bool(syntax.is_implicit_VR), little_endian=bool(syntax.is_little_endian),
                           collect=collect)


def check_structure(
    data: bytes | memoryview, *, implicit_vr: bool, little_endian: bool, collect: frozenset[int] = frozenset()
) -> dict[int, bytes]:
    """Raise Malformed unless `data` is a sequence of elements that ends where the data ends. Returns the raw
    values of the top-level elements of `collect` (tags as ints) that it holds, not empty, with a defined length."""
    view = memoryview(data).cast("B")
    walker = _Walker(view, little_endian, collect)
    walker.elements(0, len(view), implicit_vr, depth=0, stop_at=None)
    return walker.values


class _Walker:
    def __init__(self, view: memoryview, little_endian: bool, collect: frozenset[int]) -> None:
        self.view = view
        self.collect = collect
        self.values: dict[int, bytes] = {}
        order = "<" if little_endian else ">"
        self.tag = struct.Struct(order + "HH")
        self.short = struct.Struct(order + "H")
        self.long = struct.Struct(order + "L")

    def elements(self, offset: int, end: int, implicit_vr: bool, depth: int, stop_at: int | None) -> int:
        """Walk elements from `offset` until `end`, or until the delimiter `stop_at`; return where they end."""
        if depth > MAX_DEPTH:
            raise Malformed(f"sequences nested deeper than {MAX_DEPTH}")
        while end - offset > TRAILING_SLACK or (stop_at is not None and offset < end):
            tag, offset, length, vr = self.header(offset, end, implicit_vr)
            if tag == stop_at:
                return offset
            if tag in (ITEM, ITEM_END, SEQUENCE_END):
                raise Malformed(f"item tag ({tag >> 16:04X},{tag & 0xFFFF:04X}) outside a sequence")
            if length != UNDEFINED_LENGTH:
                if length > end - offset:
                    raise Malformed(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) of {length} bytes runs "
                                    f"{length - (end - offset)} bytes past the end")
                if length and depth == 0 and tag in self.collect and vr != b"SQ":
                    self.values[tag] = bytes(self.view[offset : offset + length])
                offset += length
            elif tag == PIXEL_DATA and vr != b"SQ":
                offset = self.fragments(offset, end)
            elif implicit_vr or vr in (b"SQ", b"UN"):
                # A UN of undefined length holds implicit VR little endian items (PS3.5 6.2.2).
                offset = self.sequence(offset, end, implicit_vr or vr == b"UN", depth + 1)
            else:
                raise Malformed(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) of VR {vr.decode('latin-1')!r} "
                                "with undefined length")
        if stop_at is not None:
            raise Malformed("sequence or item without its delimiter")
        return offset

    def sequence(self, offset: int, end: int, implicit_vr: bool, depth: int) -> int:
        while True:
            tag, offset, length, _ = self.header(offset, end, True)
            if tag == SEQUENCE_END:
                return offset
            if tag != ITEM:
                raise Malformed(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) where a sequence item was expected")
            if length == UNDEFINED_LENGTH:
                offset = self.elements(offset, end, implicit_vr, depth, stop_at=ITEM_END)
            elif length > end - offset:
                raise Malformed(f"sequence item of {length} bytes runs past the end")
            else:
                self.elements(offset, offset + length, implicit_vr, depth, stop_at=None)
                offset += length

    def fragments(self, offset: int, end: int) -> int:
        while True:
            tag, offset, length, _ = self.header(offset, end, True)
            if tag == SEQUENCE_END:
                return offset
            if tag != ITEM or length == UNDEFINED_LENGTH or length > end - offset:
                raise Malformed("encapsulated pixel data fragment does not fit")
            offset += length

    def header(self, offset: int, end: int, implicit_vr: bool) -> tuple[int, int, int, bytes]:
        """(tag, offset of the value, length, VR or b"") of the element at `offset`."""
        if end - offset < 8:
            raise Malformed(f"data set ends inside an element header ({end - offset} bytes left)")
        group, element = self.tag.unpack_from(self.view, offset)
        tag = group << 16 | element
        if implicit_vr or group == 0xFFFE:
            return tag, offset + 8, self.long.unpack_from(self.view, offset + 4)[0], b""
        vr = bytes(self.view[offset + 4 : offset + 6])
        if not (vr.isalpha() and vr.isupper()):
            raise Malformed(f"element ({group:04X},{element:04X}) without a valid VR")
        if vr in _LONG_VRS:
            if end - offset < 12:
                raise Malformed(f"data set ends inside an element header ({end - offset} bytes left)")
            return tag, offset + 12, self.long.unpack_from(self.view, offset + 8)[0], vr
        return tag, offset + 8, self.short.unpack_from(self.view, offset + 6)[0], vr
