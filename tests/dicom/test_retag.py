"""Splicing the NEUROLABEL block into the stored bytes gives what pydicom writes for the whole dataset."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import io

import pydicom
import pytest
from pydicom.data import get_testdata_file

from daemon.dicom.private_tags import (
    GROUP,
    apply_label_tags,
    apply_withdrawn_tags,
    encode_new_block,
    read_label_block,
    read_label_tags,
)
from daemon.dicom.retag import insert_group, splice_group
from tests.dicom.test_private_tags import SAMPLES, make_record

UNSPLICED = {"MR_small_bigendian.dcm", "image_dfl.dcm"}  # big endian, deflated: written by pydicom instead


def part10(name: str, *, other_creator: bool = False, labelled: bool = False) -> bytes:
    """The test file as the intake stores it (a Part 10 file written by pydicom), optionally with another
    private creator in group 0x0011 or an older NEUROLABEL block."""
    dataset = pydicom.dcmread(get_testdata_file(name))
    if other_creator:
        dataset.private_block(GROUP, "GEMS_PATI_01", create=True).add_new(0x10, "SS", 1)
    if labelled:
        apply_label_tags(dataset, make_record(str(dataset.StudyInstanceUID), seed=3))
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def pydicom_rewrite(data: bytes, change: object) -> tuple[pydicom.Dataset, bytes]:
    dataset = pydicom.dcmread(io.BytesIO(data))
    change(dataset)  # type: ignore[operator]
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return dataset, buffer.getvalue()


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("variant", ["plain", "other_creator", "relabel"])
def test_splice_writes_what_pydicom_writes(name: str, variant: str) -> None:
    data = part10(name, other_creator=variant == "other_creator", labelled=variant == "relabel")
    record = make_record("1.2.3", seed=1, accession=None if variant == "relabel" else "ACC-1")
    dataset = pydicom.dcmread(io.BytesIO(data))
    apply_label_tags(dataset, record)
    spliced = splice_group(data, dataset, GROUP)
    _, expected = pydicom_rewrite(data, lambda d: apply_label_tags(d, record))
    if name in UNSPLICED:
        assert spliced is None
        return
    assert spliced == expected
    found = read_label_tags(pydicom.dcmread(io.BytesIO(spliced)))
    assert found is not None and found.labels == record.labels and found.probabilities == record.probabilities


def test_withdrawal_is_spliced_too() -> None:
    data = part10("MR_small_implicit.dcm", labelled=True)
    record = make_record("1.2.3")
    at = dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc)
    dataset = pydicom.dcmread(io.BytesIO(data))
    apply_withdrawn_tags(dataset, record, at)
    spliced = splice_group(data, dataset, GROUP)
    _, expected = pydicom_rewrite(data, lambda d: apply_withdrawn_tags(d, record, at))
    assert spliced == expected
    block = read_label_block(pydicom.dcmread(io.BytesIO(spliced)))
    assert block is not None and block.record is None and block.labelled_at == at


def test_a_file_without_part10_header_is_left_to_pydicom() -> None:
    data = part10("MR_small.dcm")
    dataset = pydicom.dcmread(io.BytesIO(data))
    assert splice_group(data[132:], dataset, GROUP) is None
    assert splice_group(data[:200], dataset, GROUP) is None


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("group", [0x0009, GROUP, 0x0029, 0x7FE0, 0xFFFF])
def test_struct_walk_finds_the_range_pydicom_reads(name: str, group: int) -> None:
    from daemon.dicom.retag import _CannotWalk, _group_range, _walk

    data = part10(name, other_creator=True)
    expected = _group_range(io.BytesIO(data), group)
    try:
        found = _walk(data, group)
    except _CannotWalk:  # undefined lengths before the group: pydicom's reader then
        with pytest.raises(_CannotWalk):
            _walk(data, 0xFFFF)
        return
    assert found == expected or (expected[0] is None and found[0] is None)


def test_struct_walk_gives_up_on_a_truncated_file() -> None:
    from daemon.dicom.retag import _CannotWalk, _walk

    data = part10(SAMPLES[0])
    with pytest.raises(_CannotWalk):
        _walk(data[:-3], 0xFFFF)


def _records() -> list[tuple[object, dt.datetime | None]]:
    at = dt.datetime(2024, 6, 1, 8, 0, 1, 5, tzinfo=dt.timezone.utc)
    return [
        (make_record("1.2.3", seed=1, accession="ACC-1"), None),  # odd accession length: padded
        (make_record("1.2.3", seed=2, accession=None), None),
        (make_record("1.2.3", seed=5, accession="A\\B2"), None),  # a backslash: two values to pydicom
        (dataclasses.replace(make_record("1.2.3", seed=4), model="neurolabel_report"), None),  # no version
        (make_record("1.2.3", seed=3), at),  # withdrawn
    ]


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("case", range(5))
def test_new_block_inserted_as_pydicom_writes_it(name: str, case: int) -> None:
    record, withdrawn_at = _records()[case]
    data = part10(name)
    inserted = insert_group(data, GROUP, functools.partial(encode_new_block, record, withdrawn_at))
    has_group = any(tag.group == GROUP for tag in pydicom.dcmread(io.BytesIO(data)).keys())  # CT_small's vendor's
    if name in UNSPLICED or has_group:
        assert inserted is None
        return

    def change(dataset: pydicom.Dataset) -> None:
        if withdrawn_at is None:
            apply_label_tags(dataset, record)  # type: ignore[arg-type]
        else:
            apply_withdrawn_tags(dataset, record, withdrawn_at)  # type: ignore[arg-type]

    _, expected = pydicom_rewrite(data, change)
    assert inserted == expected


@pytest.mark.parametrize("variant", ["other_creator", "relabel"])
def test_new_block_only_where_the_group_is_empty(variant: str) -> None:
    data = part10("MR_small.dcm", other_creator=variant == "other_creator", labelled=variant == "relabel")
    encode = functools.partial(encode_new_block, make_record("1.2.3"), None)
    assert insert_group(data, GROUP, encode) is None
    assert insert_group(data[132:], GROUP, encode) is None  # no Part 10 header


def test_new_block_leaves_text_beyond_ascii_to_pydicom() -> None:
    record = make_record("1.2.3", accession="ACC-\u00e9")
    assert encode_new_block(record, None, implicit=False) is None
    assert encode_new_block(make_record("1.2.3", accession="ACC\t1"), None, implicit=True) is None
    assert encode_new_block(make_record("1.2.3"), None, implicit=True) is not None
