"""The file header is valid DICOM Part 10 that pydicom reads back, in front of the data set as received."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage

from daemon.dicom.filemeta import FileMeta, encode_file_header
from tests.dicom.datasets import encode, mr_dataset


@pytest.mark.parametrize(
    ("syntax", "implicit", "little"),
    [(ExplicitVRLittleEndian, False, True), (ImplicitVRLittleEndian, True, True), (ExplicitVRBigEndian, False, False)],
)
def test_header_and_received_bytes_make_a_readable_file(syntax: str, implicit: bool, little: bool) -> None:
    dataset = mr_dataset()
    header = encode_file_header(FileMeta(
        sop_class_uid=MRImageStorage,
        sop_instance_uid=dataset.SOPInstanceUID,
        transfer_syntax_uid=syntax,
        implementation_class_uid="1.2.826.0.1.3680043.9.3811.3.0.4",
        implementation_version_name="NEUROLABEL_0.1.0",
        source_ae_title="MODALITY1",
    ))
    read = dcmread(BytesIO(header + encode(dataset, implicit, little)))
    meta = read.file_meta
    assert meta.MediaStorageSOPClassUID == MRImageStorage
    assert meta.MediaStorageSOPInstanceUID == dataset.SOPInstanceUID
    assert meta.TransferSyntaxUID == syntax
    assert meta.ImplementationClassUID == "1.2.826.0.1.3680043.9.3811.3.0.4"
    assert meta.ImplementationVersionName == "NEUROLABEL_0.1.0"
    assert meta.SourceApplicationEntityTitle == "MODALITY1"
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert meta.FileMetaInformationGroupLength == len(header) - 132 - 12
    assert read.PixelData == dataset.PixelData
    assert read.StudyInstanceUID == dataset.StudyInstanceUID


def test_odd_length_values_are_padded_and_unprintable_titles_left_out() -> None:
    header = encode_file_header(FileMeta("1.2.3", "1.2.34", "1.2.840.10008.1.2.1", "1.2.345", "ODD", "BAD\\AE"))
    assert len(header) % 2 == 0
    meta = dcmread(BytesIO(header + encode(mr_dataset()))).file_meta
    assert meta.MediaStorageSOPInstanceUID == "1.2.34"
    assert meta.ImplementationVersionName == "ODD"
    assert "SourceApplicationEntityTitle" not in meta
