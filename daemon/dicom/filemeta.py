"""The DICOM file header (preamble, "DICM", File Meta Information group 0002), encoded directly (pure).

A received instance is stored as this header followed by the data set bytes
exactly as they arrived, in the transfer syntax of the presentation context
(PS3.10 section 7.1). Building these ~200 bytes by hand avoids decoding and
re-encoding anything through pydicom on the hot path.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

PREAMBLE = b"\x00" * 128 + b"DICM"
FILE_META_VERSION = b"\x00\x01"
META_GROUP = 0x0002

_TAG_GROUP_LENGTH = 0x0000
_TAG_VERSION = 0x0001
_TAG_SOP_CLASS = 0x0002
_TAG_SOP_INSTANCE = 0x0003
_TAG_TRANSFER_SYNTAX = 0x0010
_TAG_IMPLEMENTATION_CLASS = 0x0012
_TAG_IMPLEMENTATION_VERSION = 0x0013
_TAG_SOURCE_AE = 0x0016

# VRs whose explicit-VR header has a 4-byte length after two reserved bytes.
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})


@dataclass(frozen=True)
class FileMeta:
    """What the header says about the instance; UIDs must already be validated by the caller."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    implementation_class_uid: str
    implementation_version_name: str = ""
    source_ae_title: str = ""


def encode_file_header(meta: FileMeta) -> bytes:
    """Preamble + "DICM" + group 0002 in explicit VR little endian, with its group length."""
    elements = [
        _element(_TAG_VERSION, b"OB", FILE_META_VERSION),
        _element(_TAG_SOP_CLASS, b"UI", _uid(meta.sop_class_uid)),
        _element(_TAG_SOP_INSTANCE, b"UI", _uid(meta.sop_instance_uid)),
        _element(_TAG_TRANSFER_SYNTAX, b"UI", _uid(meta.transfer_syntax_uid)),
        _element(_TAG_IMPLEMENTATION_CLASS, b"UI", _uid(meta.implementation_class_uid)),
    ]
    version = _text(meta.implementation_version_name, 16)
    if version:
        elements.append(_element(_TAG_IMPLEMENTATION_VERSION, b"SH", version))
    source = _text(meta.source_ae_title, 16)
    if source:
        elements.append(_element(_TAG_SOURCE_AE, b"AE", source))
    body = b"".join(elements)
    group_length = _element(_TAG_GROUP_LENGTH, b"UL", struct.pack("<I", len(body)))
    return PREAMBLE + group_length + body


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr in _LONG_VRS:
        return struct.pack("<HH2s2xI", META_GROUP, element, vr, len(value)) + value
    return struct.pack("<HH2sH", META_GROUP, element, vr, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str, limit: int) -> bytes:
    """A short ASCII text value padded with a space to even length; b"" when empty or not printable ASCII."""
    stripped = value.strip()
    if not stripped or not stripped.isascii() or not stripped.isprintable() or "\\" in stripped:
        return b""
    raw = stripped[:limit].encode("ascii")
    return raw + b" " if len(raw) % 2 else raw
