"""Received data set -> index record (pure): decoding only the header, validating UIDs, tolerating odd values."""

from __future__ import annotations

import zlib
from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)

from daemon.dicom.index import IndexRecord, MalformedDataset, index_record, read_header
from tests.dicom.conftest import pydicom_file
from tests.dicom.datasets import encode, mr_dataset, new_uid


def record_of(data: bytes, syntax: str, sop_class: str, sop_instance: str) -> IndexRecord:
    return index_record(read_header(data, syntax), sop_class_uid=sop_class, sop_instance_uid=sop_instance,
                        transfer_syntax_uid=syntax)


@pytest.mark.parametrize(
    ("syntax", "implicit", "little"),
    [(ExplicitVRLittleEndian, False, True), (ImplicitVRLittleEndian, True, True), (ExplicitVRBigEndian, False, False)],
)
def test_record_from_each_uncompressed_syntax(syntax: str, implicit: bool, little: bool) -> None:
    dataset = mr_dataset(accession="A1", patient_id="P9", instance_number=7)
    record = record_of(encode(dataset, implicit, little), syntax, MRImageStorage, dataset.SOPInstanceUID)
    assert record.sop_instance_uid == dataset.SOPInstanceUID
    assert record.sop_class_uid == MRImageStorage
    assert record.transfer_syntax_uid == syntax
    assert record.instance_number == 7
    assert record.study.study_instance_uid == dataset.StudyInstanceUID
    assert record.study.accession_number == "A1"
    assert (record.study.study_date, record.study.study_time) == ("20240102", "101500")
    assert record.study.study_description == "MRI HEAD"
    assert record.study.referring_physician == "Doe^Referrer"
    assert record.series.series_instance_uid == dataset.SeriesInstanceUID
    assert (record.series.modality, record.series.series_number) == ("MR", 3)
    assert (record.series.series_description, record.series.body_part_examined) == ("T2 AX", "HEAD")
    assert record.patient.patient_id == "P9"
    assert record.patient.patient_name == "Test^Patient"
    assert (record.patient.birth_date, record.patient.sex) == ("19700101", "F")


def test_deflated_data_set_is_inflated_for_its_header() -> None:
    dataset = mr_dataset()
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(encode(dataset)) + compressor.flush()
    record = record_of(deflated, DeflatedExplicitVRLittleEndian, MRImageStorage, dataset.SOPInstanceUID)
    assert record.study.study_instance_uid == dataset.StudyInstanceUID


def test_pixel_data_is_never_decoded() -> None:
    dataset = mr_dataset()
    data = encode(dataset)
    # Garbage after the indexed attributes (where Pixel Data starts) does not matter.
    cut = data.index(b"\xe0\x7f\x10\x00")
    header = read_header(data[:cut] + b"\xff" * 64, ExplicitVRLittleEndian)
    assert 0x7FE00010 not in header
    assert header.values[0x0020000D].rstrip(b"\x00").decode() == dataset.StudyInstanceUID


@pytest.mark.parametrize(
    "name",
    ["MR_small.dcm", "CT_small.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
     "MR_small_bigendian.dcm", "SC_rgb_rle_2frame.dcm", "test-SR.dcm", "JPEG-lossy.dcm", "rtdose.dcm"],
)
def test_records_from_pydicom_test_files(name: str) -> None:
    path = pydicom_file(name)
    meta = read_file_meta_info(path)
    raw = path.read_bytes()
    reference = dcmread(path, stop_before_pixels=True)
    start = raw.index(b"DICM") + 4 + 12 + int(meta.FileMetaInformationGroupLength)
    record = record_of(raw[start:], meta.TransferSyntaxUID, reference.SOPClassUID, reference.SOPInstanceUID)
    assert record.study.study_instance_uid == reference.StudyInstanceUID
    assert record.series.series_instance_uid == reference.SeriesInstanceUID


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"StudyInstanceUID": "1.2.abc"}, "Study Instance UID"),
        ({"SeriesInstanceUID": "../../x"}, "Series Instance UID"),
        ({"StudyInstanceUID": None}, "Study Instance UID"),
        ({"SOPInstanceUID": "1.2.3.4"}, "differs from the C-STORE request"),
        # Multi-valued UIDs (VM is 1) were read by their first value (found by tests/reliability/test_access.py)
        ({"StudyInstanceUID": "1.2\\..\\..\\x"}, "Study Instance UID"),
        ({"SeriesInstanceUID": "1.2.3\\1.2.4"}, "Series Instance UID"),
    ],
)
def test_invalid_identifiers_are_malformed(change: dict[str, str | None], reason: str) -> None:
    dataset = mr_dataset()
    sop = dataset.SOPInstanceUID
    for keyword, value in change.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    with pytest.raises(MalformedDataset, match=reason):
        record_of(encode(dataset), ExplicitVRLittleEndian, MRImageStorage, sop)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_a_multi_valued_sop_instance_uid_is_malformed() -> None:
    dataset = mr_dataset()
    dataset.SOPInstanceUID = "1.2\\..\\..\\x"
    with pytest.raises(MalformedDataset, match="differs from the C-STORE request"):
        record_of(encode(dataset), ExplicitVRLittleEndian, MRImageStorage, "1.2")


def test_invalid_request_uids_are_malformed() -> None:
    dataset = mr_dataset()
    with pytest.raises(MalformedDataset, match="Affected SOP Instance UID"):
        record_of(encode(dataset), ExplicitVRLittleEndian, MRImageStorage, "1.2.x")
    with pytest.raises(MalformedDataset, match="SOP Class UID"):
        record_of(encode(dataset), ExplicitVRLittleEndian, "1.2.840.10008.5.1.4.1.1.2", dataset.SOPInstanceUID)


@pytest.mark.parametrize("data", [b"", b"\x08\x00\x05\x00CS\xff\xff", b"\xde\xad\xbe\xef" * 3, b"garbage in"])
def test_undecodable_bytes_are_malformed(data: bytes) -> None:
    with pytest.raises(MalformedDataset):
        record_of(data, ExplicitVRLittleEndian, MRImageStorage, new_uid())


@pytest.mark.filterwarnings("ignore:The value length")
def test_odd_values_are_left_out_or_cut_not_fatal() -> None:
    dataset = mr_dataset(instance_number=12)
    dataset.StudyDate = "20240102"
    dataset.AccessionNumber = "X" * 100
    dataset.StudyDescription = ""
    # Values pydicom would not let us set: a date that is not DA and an IS that is not a number.
    data = encode(dataset).replace(b"DA\x08\x0020240102", b"DA\x0a\x002024-01-02", 1)
    data = data.replace(b"IS\x02\x0012", b"IS\x02\x00ab", 1)
    record = record_of(data, ExplicitVRLittleEndian, MRImageStorage, dataset.SOPInstanceUID)
    assert record.study.study_date is None
    assert record.instance_number is None
    assert record.study.accession_number == "X" * 64
    assert record.study.study_description is None


def test_text_is_decoded_with_the_specific_character_set_and_first_value_taken() -> None:
    dataset = mr_dataset()
    dataset.SpecificCharacterSet = "ISO_IR 100"
    dataset.PatientName = "Müller^Jürgen"
    dataset.StudyDescription = "MRT KOPF"
    dataset.PatientID = "P1"
    record = record_of(encode(dataset), ExplicitVRLittleEndian, MRImageStorage, dataset.SOPInstanceUID)
    assert record.patient.patient_name == "Müller^Jürgen"
    dataset.BodyPartExamined = ["HEAD", "NECK"]
    record = record_of(encode(dataset), ExplicitVRLittleEndian, MRImageStorage, dataset.SOPInstanceUID)
    assert record.series.body_part_examined == "HEAD"


def test_missing_optional_attributes_give_empty_fields() -> None:
    dataset = mr_dataset(accession=None)
    for keyword in ("PatientID", "PatientName", "Modality", "SeriesNumber", "StudyTime"):
        delattr(dataset, keyword)
    record = record_of(encode(dataset), ExplicitVRLittleEndian, MRImageStorage, dataset.SOPInstanceUID)
    assert record.patient.patient_id == ""
    assert record.patient.patient_name is None
    assert record.study.accession_number is None
    assert record.series.modality is None
    assert record.series.series_number is None
