"""Data set structure: whole data sets of every kind pass; cut, lying or unterminated ones are Malformed; the walk
reads the index's header as pydicom does."""

from __future__ import annotations

import struct

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pynetdicom.dsutils import encode

from daemon.dicom.index import INDEXED_TAGS, header_of, read_header
from daemon.dicom.structure import MAX_DEPTH, Malformed, check_data_set, check_structure

SAMPLES = ["MR_small.dcm", "CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "test-SR.dcm", "rtdose.dcm",
           "SC_rgb_rle_2frame.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm"]


def encoded(name: str) -> tuple[bytes, bool, bool]:
    dataset = pydicom.dcmread(str(get_testdata_file(name)))
    syntax = dataset.file_meta.TransferSyntaxUID
    data = encode(dataset, syntax.is_implicit_VR, syntax.is_little_endian)
    assert data is not None
    return data, syntax.is_implicit_VR, syntax.is_little_endian


@pytest.mark.parametrize("name", SAMPLES)
def test_whole_data_sets_pass(name: str) -> None:
    data, implicit, little = encoded(name)
    check_structure(data, implicit_vr=implicit, little_endian=little)


@pytest.mark.parametrize("name", SAMPLES)
def test_the_walk_reads_the_header_pydicom_reads(name: str) -> None:
    dataset = pydicom.dcmread(str(get_testdata_file(name)))
    syntax = dataset.file_meta.TransferSyntaxUID
    data, _, _ = encoded(name)
    values = check_data_set(data, syntax, collect=INDEXED_TAGS)
    assert values is not None
    # (pydicom reads an empty value as b"" or None depending on the VR encoding; the index takes both as absent)
    read = read_header(data, syntax)
    assert header_of(values) == header_of({tag: value for tag, value in read.values.items() if value})
    assert values  # every sample has some of them (a walk that collected nothing would also "agree" with nothing)
    # Only what was asked for, and only from the top level (SR content items hold many of these tags too).
    assert check_data_set(data, syntax) == {}
    assert set(values) <= INDEXED_TAGS


def test_values_inside_sequences_are_not_taken_for_the_data_set_s() -> None:
    dataset = pydicom.Dataset()
    dataset.PatientID = "TOP"
    item = pydicom.Dataset()
    item.PatientID = "NESTED"
    item.StudyInstanceUID = "1.2.3"
    dataset.OtherPatientIDsSequence = [item]
    data = encode(dataset, False, True)
    assert data is not None
    assert check_structure(data, implicit_vr=False, little_endian=True, collect=INDEXED_TAGS) == {0x00100020: b"TOP "}


@pytest.mark.parametrize("name", SAMPLES)
def test_a_data_set_cut_inside_its_last_element_is_malformed(name: str) -> None:
    data, implicit, little = encoded(name)
    with pytest.raises(Malformed):
        check_structure(data[: len(data) - 40], implicit_vr=implicit, little_endian=little)


def test_every_cut_is_malformed_or_on_an_element_boundary() -> None:
    data, implicit, little = encoded("MR_small.dcm")
    boundaries = set()
    offset = 0
    while offset < len(data):  # top-level element boundaries of this explicit VR little endian data set
        boundaries.add(offset)
        vr = data[offset + 4: offset + 6]
        if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
            offset += 12 + struct.unpack_from("<L", data, offset + 8)[0]
        else:
            offset += 8 + struct.unpack_from("<H", data, offset + 6)[0]
    for cut in range(0, len(data), 7):
        try:
            check_structure(data[:cut], implicit_vr=implicit, little_endian=little)
        except Malformed:
            continue
        assert any(0 <= cut - boundary <= 7 for boundary in boundaries), cut


def element(tag: tuple[int, int], vr: bytes, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    if vr in (b"OB", b"SQ", b"UN", b"UT"):
        return struct.pack("<HH", *tag) + vr + b"\x00\x00" + struct.pack("<L", size) + value
    return struct.pack("<HH", *tag) + vr + struct.pack("<H", size) + value


ITEM = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
ITEM_END = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
SEQUENCE_END = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
PATIENT_ID = element((0x0010, 0x0020), b"LO", b"ID01")


def nested(depth: int) -> bytes:
    data = PATIENT_ID
    for _ in range(depth):
        data = element((0x0008, 0x1115), b"SQ", b"", length=0xFFFFFFFF) + ITEM + data + ITEM_END + SEQUENCE_END
    return data


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (element((0x0010, 0x0010), b"PN", b"AB", length=400), "past the end"),
        (element((0x0009, 0x1001), b"UN", b"\x00" * 8, length=0xFFFFFFF0) + PATIENT_ID, "past the end"),
        (element((0x0008, 0x1115), b"SQ", b"", length=0xFFFFFFFF) + ITEM + PATIENT_ID, "delimiter"),
        (element((0x0008, 0x1115), b"SQ", b"", length=0xFFFFFFFF) + PATIENT_ID + SEQUENCE_END, "item was expected"),
        (PATIENT_ID + ITEM_END, "outside a sequence"),
        (element((0x0010, 0x0020), b"LO", b"", length=0xFFFF) + b"\x00" * 10, "past the end"),
        (b"\x10\x00\x20\x00\x00\x01\x04\x00ID01", "valid VR"),
        (nested(MAX_DEPTH + 2), "nested"),
    ],
)
def test_broken_structures_are_named(data: bytes, reason: str) -> None:
    with pytest.raises(Malformed, match=reason):
        check_structure(data, implicit_vr=False, little_endian=True)


def test_undefined_length_sequences_and_un_are_followed() -> None:
    nested = ITEM + PATIENT_ID + ITEM_END + SEQUENCE_END
    implicit_item = struct.pack("<HHL", 0x0010, 0x0020, 4) + b"ID01"
    un = ITEM + implicit_item + ITEM_END + SEQUENCE_END
    data = (element((0x0008, 0x1115), b"SQ", b"", length=0xFFFFFFFF) + nested
            + element((0x0009, 0x1001), b"UN", b"", length=0xFFFFFFFF) + un + PATIENT_ID)
    check_structure(data, implicit_vr=False, little_endian=True)


def test_a_few_padding_bytes_at_the_end_pass_and_moderate_nesting_too() -> None:
    check_structure(PATIENT_ID + b"\x00" * 5, implicit_vr=False, little_endian=True)
    check_structure(nested(MAX_DEPTH - 1), implicit_vr=False, little_endian=True)
