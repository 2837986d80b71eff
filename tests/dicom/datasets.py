"""Small DICOM data sets for the intake tests, built in memory."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

def new_uid() -> str:
    return str(generate_uid())


def mr_dataset(
    study: str | None = None,
    series: str | None = None,
    sop: str | None = None,
    *,
    accession: str | None = "ACC123",
    patient_id: str = "PAT1",
    modality: str = "MR",
    instance_number: int = 1,
    pixels: int = 4,
) -> Dataset:
    dataset = Dataset()
    dataset.SOPClassUID = MRImageStorage
    dataset.SOPInstanceUID = sop or new_uid()
    dataset.StudyDate = "20240102"
    dataset.StudyTime = "101500"
    if accession is not None:
        dataset.AccessionNumber = accession
    dataset.Modality = modality
    dataset.StudyDescription = "MRI HEAD"
    dataset.SeriesDescription = "T2 AX"
    dataset.ReferringPhysicianName = "Doe^Referrer"
    dataset.PatientName = "Test^Patient"
    dataset.PatientID = patient_id
    dataset.PatientBirthDate = "19700101"
    dataset.PatientSex = "F"
    dataset.BodyPartExamined = "HEAD"
    dataset.StudyInstanceUID = study or new_uid()
    dataset.SeriesInstanceUID = series or new_uid()
    dataset.SeriesNumber = 3
    dataset.InstanceNumber = instance_number
    dataset.Rows = dataset.Columns = pixels
    dataset.BitsAllocated = dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.PixelData = bytes(range(256))[: pixels * pixels * 2].ljust(pixels * pixels * 2, b"\x01")
    return dataset


def encode(dataset: Dataset, implicit: bool = False, little: bool = True) -> bytes:
    """The data set as a C-STORE carries it (no file meta)."""
    buffer = BytesIO()
    writer = DicomFileLike(buffer)
    writer.is_implicit_VR = implicit
    writer.is_little_endian = little
    write_dataset(writer, dataset)
    return buffer.getvalue()


def save(dataset: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = transfer_syntax
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path
