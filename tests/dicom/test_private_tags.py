"""The NEUROLABEL private block: written without decoding pixel data, read back exactly, on every encoding."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from daemon.dicom.private_tags import (
    GROUP,
    PRIVATE_CREATOR,
    STATUS_WITHDRAWN,
    LabelTagError,
    apply_label_tags,
    apply_withdrawn_tags,
    carries_labels,
    read_label_block,
    read_label_tags,
    remove_label_tags,
)
from daemon.labels import LABEL_KEYS, LabelRecord

SAMPLES = [
    "MR_small.dcm",  # explicit VR little endian
    "CT_small.dcm",
    "MR_small_implicit.dcm",  # implicit VR: private VRs are lost in the file
    "MR_small_bigendian.dcm",
    "JPEG2000.dcm",
    "MR_small_jp2klossless.dcm",
    "JPEG-lossy.dcm",
    "MR_small_RLE.dcm",
    "SC_rgb_rle_2frame.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "image_dfl.dcm",  # deflated
]


def make_record(study_uid: str = "1.2.3", *, seed: int = 0, accession: str | None = "ACC-0042") -> LabelRecord:
    return LabelRecord(
        study_instance_uid=study_uid,
        accession_number=accession,
        labels={key: (index + seed) % 2 for index, key in enumerate(LABEL_KEYS)},
        probabilities={key: ((index + seed) % 8) / 7 + 1e-9 for index, key in enumerate(LABEL_KEYS)},
        model="neurolabel_report:3",
        labelled_at=dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.timezone.utc),
    )


def roundtrip(dataset: pydicom.Dataset) -> pydicom.Dataset:
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize("name", SAMPLES)
def test_round_trip_keeps_pixel_data_and_transfer_syntax(name: str) -> None:
    original = pydicom.dcmread(get_testdata_file(name))
    pixel_bytes = original.get("PixelData")
    syntax = original.file_meta.TransferSyntaxUID
    record = make_record(str(original.StudyInstanceUID))

    apply_label_tags(original, record)
    written = roundtrip(original)

    assert read_label_tags(written) == record
    assert carries_labels(written, record)
    assert written.file_meta.TransferSyntaxUID == syntax
    assert written.get("PixelData") == pixel_bytes
    assert written.private_block(GROUP, PRIVATE_CREATOR) is not None


def test_pixel_data_is_not_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(refuse))
    apply_label_tags(dataset, make_record(str(dataset.StudyInstanceUID)))
    assert read_label_tags(roundtrip(dataset)) is not None


def test_relabel_replaces_the_block_instead_of_adding_one() -> None:
    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    first, second = make_record(seed=0), make_record(seed=1, accession=None)
    apply_label_tags(dataset, first)
    apply_label_tags(dataset, second)
    written = roundtrip(dataset)

    creators = [e for e in written.group_dataset(GROUP) if e.tag.element < 0x100 and e.value == PRIVATE_CREATOR]
    assert len(creators) == 1
    found = read_label_tags(written)
    assert found is not None and found.labels == second.labels and found.accession_number is None
    assert not carries_labels(written, first)


def test_block_found_through_its_creator_when_the_first_slot_is_taken() -> None:
    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    other = dataset.private_block(GROUP, "GEMS_PATI_01", create=True)
    other.add_new(0x10, "SS", 1)
    record = make_record(str(dataset.StudyInstanceUID))
    apply_label_tags(dataset, record)
    written = roundtrip(dataset)

    assert written.private_block(GROUP, PRIVATE_CREATOR).block_start == 0x1100
    assert read_label_tags(written) == record
    assert written[0x00111010].value == 1


def test_withdrawn_block_has_no_labels() -> None:
    dataset = pydicom.dcmread(get_testdata_file("MR_small_implicit.dcm"))
    record = make_record()
    apply_label_tags(dataset, record)
    withdrawn_at = dt.datetime(2024, 6, 1, 8, 0, tzinfo=dt.timezone.utc)
    apply_withdrawn_tags(dataset, record, withdrawn_at)
    written = roundtrip(dataset)

    assert read_label_tags(written) is None
    block = read_label_block(written)
    assert block is not None and block.status == STATUS_WITHDRAWN and block.labelled_at == withdrawn_at
    assert carries_labels(written, record, withdrawn_at=withdrawn_at)
    assert not carries_labels(written, record)


def test_no_block_and_removal() -> None:
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    assert read_label_tags(dataset) is None and read_label_block(dataset) is None
    apply_label_tags(dataset, make_record())
    assert remove_label_tags(dataset)
    assert read_label_block(roundtrip(dataset)) is None
    assert not remove_label_tags(dataset)


def test_damaged_block_is_an_error() -> None:
    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    apply_label_tags(dataset, make_record())
    block = dataset.private_block(GROUP, PRIVATE_CREATOR)
    block.add_new(0x03, "US", [1, 0])  # too few label bits
    with pytest.raises(LabelTagError):
        read_label_tags(dataset)
    assert not carries_labels(dataset, make_record())


def test_naive_labelled_time_is_utc(tmp_path: Path) -> None:
    record = make_record()
    naive = LabelRecord(**{**record.__dict__, "labelled_at": record.labelled_at.replace(tzinfo=None)})
    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    apply_label_tags(dataset, naive)
    assert carries_labels(roundtrip(dataset), record)
