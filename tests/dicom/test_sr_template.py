"""The fast SR encoder writes, byte for byte, what a full highdicom build of the same SR writes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import random
import shutil
import subprocess
import types
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import highdicom.base
import highdicom.base_content
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from daemon.dicom.sr import build_label_sr, read_label_sr, read_label_sr_state, sr_identity
from daemon.dicom.sr_template import SrEncoder
from daemon.labels import LABEL_KEYS, LabelRecord
from tests.dicom.test_sr import make_record, study_instances

WITHDRAWN_AT = dt.datetime(2024, 5, 2, 9, 0, 1, 5, tzinfo=dt.timezone.utc)


class FrozenDatetime(dt.datetime):
    @classmethod
    def now(cls, tz: dt.tzinfo | None = None) -> FrozenDatetime:
        return cls(2024, 6, 1, 8, 30, 0, 123456, tzinfo=tz)


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """highdicom stamps creation and content times from the clock; both builds must see the same moment."""
    clock = types.SimpleNamespace(datetime=FrozenDatetime, date=dt.date, time=dt.time, timedelta=dt.timedelta,
                                  timezone=dt.timezone)
    monkeypatch.setattr(highdicom.base, "datetime", clock)
    monkeypatch.setattr(highdicom.base_content, "datetime", clock)


def frozen_encoder(capacity: int = 16) -> SrEncoder:
    """An encoder reading the frozen clock the full build's highdicom reads."""
    return SrEncoder(capacity, clock=FrozenDatetime.now)


def evidence_of(datasets: Sequence[Dataset]) -> list[Dataset]:
    """As the write-back passes evidence: every attribute but pixel data for the first, UIDs for the rest."""
    result = []
    for index, dataset in enumerate(datasets):
        item = Dataset()
        if index == 0:
            for element in dataset:
                if element.tag.group < 0x7FE0 and not element.tag.is_private:
                    item.add(element)
        else:
            for keyword in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
                setattr(item, keyword, dataset[keyword].value)
        result.append(item)
    return result


def full_build(record: LabelRecord, evidence: Sequence[Dataset], **options: object) -> bytes:
    identity = sr_identity(record.study_instance_uid, 3, evidence_uids=[str(d.SOPInstanceUID) for d in evidence])
    buffer = io.BytesIO()
    sr = build_label_sr(record, evidence, identity, **options)  # type: ignore[arg-type]
    sr.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def fast_build(encoder: SrEncoder, record: LabelRecord, evidence: Sequence[Dataset], **options: object) -> bytes:
    identity = sr_identity(record.study_instance_uid, 3, evidence_uids=[str(d.SOPInstanceUID) for d in evidence])
    return encoder.encode(record, evidence, identity, **options)  # type: ignore[arg-type]


def with_labels(record: LabelRecord, bits: Sequence[int], probabilities: Sequence[float]) -> LabelRecord:
    return dataclasses.replace(
        record, labels=dict(zip(LABEL_KEYS, bits)), probabilities=dict(zip(LABEL_KEYS, probabilities))
    )


def label_sets() -> list[tuple[list[int], list[float]]]:
    generator = random.Random(7)
    sets = [
        ([0] * 8, [0.0] * 8),
        ([1] * 8, [1.0] * 8),
        ([1, 0] * 4, [1 / 3, 2 / 3, 1e-9, 0.999999999999, 0.1 + 0.2, 0.5, 5e-324, 0.123456789012345678]),
    ]
    for _ in range(5):
        bits = [generator.randint(0, 1) for _ in LABEL_KEYS]
        sets.append((bits, [generator.random() ** generator.choice((1, 4, 12)) for _ in LABEL_KEYS]))
    return sets


@pytest.mark.parametrize(("bits", "probabilities"), label_sets())
def test_label_sets_encode_like_the_full_build(bits: list[int], probabilities: list[float]) -> None:
    evidence = evidence_of(study_instances(3))
    record = with_labels(make_record(str(evidence[0].StudyInstanceUID)), bits, probabilities)
    fast = fast_build(frozen_encoder(), record, evidence)
    assert fast == full_build(record, evidence)
    assert read_label_sr(pydicom.dcmread(io.BytesIO(fast))) == dataclasses.replace(record, report_id=None)


def test_one_encoder_serves_many_studies_and_models() -> None:
    encoder = frozen_encoder(capacity=2)
    for index, (bits, probabilities) in enumerate(label_sets()):
        datasets = study_instances(1 + index % 3)
        for dataset in datasets:
            dataset.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.{100 + index}"
            dataset.PatientID = f"P{index}"
        evidence = evidence_of(datasets)
        model = ("neurolabel_report:3", "neurolabel_report:4", "nl")[index % 3]  # capacity 2: evicted and made again
        record = dataclasses.replace(
            with_labels(make_record(str(evidence[0].StudyInstanceUID)), bits, probabilities), model=model
        )
        assert fast_build(encoder, record, evidence) == full_build(record, evidence)


def test_withdrawal_and_predecessor_encode_like_the_full_build() -> None:
    evidence = evidence_of(study_instances(2))
    record = make_record(str(evidence[0].StudyInstanceUID), seed=1)
    previous = Dataset()
    previous.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    previous.SOPInstanceUID = "2.25.12345"
    previous.StudyInstanceUID = record.study_instance_uid
    previous.SeriesInstanceUID = "2.25.678"
    encoder = frozen_encoder()
    for options in ({"previous_versions": [previous]}, {"withdrawn_at": WITHDRAWN_AT},
                    {"withdrawn_at": WITHDRAWN_AT, "previous_versions": [previous]}):
        fast = fast_build(encoder, record, evidence, **options)
        assert fast == full_build(record, evidence, **options)
    state = read_label_sr_state(pydicom.dcmread(io.BytesIO(fast)))
    assert state is not None and state.record is None and state.labelled_at == WITHDRAWN_AT


def test_sparse_evidence_and_accession_from_the_labels() -> None:
    datasets = study_instances(1)
    for keyword in ("PatientBirthDate", "StudyID", "AccessionNumber", "ReferringPhysicianName", "PatientSex"):
        if keyword in datasets[0]:
            delattr(datasets[0], keyword)
    evidence = evidence_of(datasets)
    for accession in ("ACC-9", None):
        record = dataclasses.replace(make_record(str(evidence[0].StudyInstanceUID)), accession_number=accession)
        fast = fast_build(frozen_encoder(), record, evidence)
        assert fast == full_build(record, evidence)
        assert pydicom.dcmread(io.BytesIO(fast)).AccessionNumber == (accession or "")


def test_character_set_of_the_evidence_is_kept() -> None:
    datasets = study_instances(2)
    for dataset in datasets:
        dataset.SpecificCharacterSet = "ISO_IR 192"
        dataset.PatientName = "Müller^Zoë"
    evidence = evidence_of(datasets)
    record = dataclasses.replace(make_record(str(evidence[0].StudyInstanceUID)), model="modèle:2")
    encoder = frozen_encoder()
    fast = fast_build(encoder, record, evidence)
    assert fast == full_build(record, evidence)
    assert str(pydicom.dcmread(io.BytesIO(fast)).PatientName) == "Müller^Zoë"
    # The same model for images without a character set gets its own template.
    plain = evidence_of(study_instances(1))
    record = dataclasses.replace(record, study_instance_uid=str(plain[0].StudyInstanceUID), model="nl:2")
    assert fast_build(encoder, record, plain) == full_build(record, plain)


def test_highdicom_reads_the_fast_sr_as_a_measurement_report() -> None:
    evidence = evidence_of(study_instances(2))
    record = make_record(str(evidence[0].StudyInstanceUID))
    dataset = pydicom.dcmread(io.BytesIO(fast_build(frozen_encoder(), record, evidence)))
    document = hd.sr.ComprehensiveSR.from_dataset(dataset)
    assert isinstance(document.content, hd.sr.MeasurementReport)
    (group,) = document.content.get_image_measurement_groups()
    assert len(group.get_qualitative_evaluations()) == len(LABEL_KEYS)
    assert len(group.get_measurements()) == len(LABEL_KEYS)
    assert read_label_sr(dataset) == dataclasses.replace(record, report_id=None)


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="DCMTK's dsrdump is not installed")
def test_dcmtk_reads_the_fast_sr_as_a_valid_document(tmp_path: Path) -> None:
    evidence = evidence_of(study_instances(2))
    path = tmp_path / "sr.dcm"
    path.write_bytes(fast_build(frozen_encoder(), make_record(str(evidence[0].StudyInstanceUID)), evidence))
    result = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    # DCMTK 3.6.7 flags the UTC offset "+0000" of a DT, which PS3.5 allows; nothing else may be reported.
    assert [line for line in result.stderr.splitlines() if line.strip() and "ObservationDateTime" not in line] == []
    assert "Cerebral atrophy" in result.stdout and "Present" in result.stdout


def read_back(dataset: Dataset, *, implicit: bool) -> Dataset:
    """`dataset` stored and read as the write-back reads it: raw elements, copied without decoding them."""
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian if implicit else (
        pydicom.uid.ExplicitVRLittleEndian)
    buffer = io.BytesIO()
    dataset.save_as(buffer, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    read = pydicom.dcmread(io.BytesIO(buffer.getvalue()))
    return Dataset({tag: read.get_item(tag) for tag in read.keys() if tag.group < 0x7FE0 and not tag.is_private})


@pytest.mark.parametrize("implicit", [True, False])
def test_evidence_read_raw_from_stored_files_encodes_like_the_full_build(implicit: bool) -> None:
    datasets = study_instances(3)
    evidence = [read_back(datasets[0], implicit=implicit), *evidence_of(datasets)[1:]]
    record = make_record(str(evidence[0].StudyInstanceUID))
    fast = fast_build(frozen_encoder(), record, evidence)
    evidence = [read_back(datasets[0], implicit=implicit), *evidence_of(datasets)[1:]]
    assert fast == full_build(record, evidence)


def test_other_sop_classes_and_equipment_through_one_encoder() -> None:
    """The copied patient and study attributes follow the evidence's IOD, the acquisition-equipment item its
    equipment (kept per equipment: a second study of another scanner must not get the first one's)."""
    encoder = frozen_encoder()
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    mr = study_instances(1)[0]
    other_scanner = study_instances(1)[0]
    other_scanner.Manufacturer = "ACME"
    other_scanner.StationName = "MR2"
    no_manufacturer = study_instances(1)[0]
    del no_manufacturer.Manufacturer
    for index, dataset in enumerate((ct, mr, other_scanner, no_manufacturer, mr)):
        dataset = pydicom.Dataset(dataset)
        dataset.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.{200 + index}"
        evidence = evidence_of([dataset])
        record = make_record(str(evidence[0].StudyInstanceUID), seed=index)
        fast = fast_build(encoder, record, evidence)
        assert fast == full_build(record, evidence), index
    assert "ContributingEquipmentSequence" in pydicom.dcmread(io.BytesIO(fast))


def test_evidence_of_another_study_is_referenced_like_the_full_build() -> None:
    datasets = study_instances(3)
    datasets[2].StudyInstanceUID = "1.2.826.0.1.3680043.8.498.99"
    fast, full = both_builds(evidence_of(datasets))
    assert fast == full
    assert "PertinentOtherEvidenceSequence" in pydicom.dcmread(io.BytesIO(fast))
    # An instance given twice is referenced once; series in their order of appearance.
    datasets = study_instances(4)
    fast, full = both_builds(evidence_of([datasets[1], datasets[0], datasets[2], datasets[1], datasets[3]]))
    assert fast == full


def test_a_patient_sex_highdicom_rejects_is_rejected() -> None:
    datasets = study_instances(1)
    datasets[0].PatientSex = "X"
    with pytest.raises(ValueError):
        both_builds(evidence_of(datasets))
    record = make_record(str(datasets[0].StudyInstanceUID))
    with pytest.raises(ValueError):
        full_build(record, evidence_of(datasets))


def both_builds(evidence: list[Dataset]) -> tuple[bytes, bytes]:
    """The fast encoding (first) and the full build of the labels of `evidence`'s study."""
    record = make_record(str(evidence[0].StudyInstanceUID))
    return fast_build(frozen_encoder(), record, evidence), full_build(record, evidence)


def test_a_study_needs_evidence() -> None:
    with pytest.raises(ValueError):
        frozen_encoder().encode(make_record("1.2.3"), [], sr_identity("1.2.3", 1))


PLAIN_ELEMENTS = [
    ("UI", "1.2.345"), ("UI", "1.2.34"), ("UI", ""), ("DA", "20240601"), ("DA", dt.date(2024, 6, 1)),
    ("TM", "083000.123456"), ("DT", dt.datetime(2024, 6, 1, 8, 30, tzinfo=dt.timezone.utc)),
    ("CS", ["ORIGINAL", "PRIMARY"]), ("DS", "0.5"), ("DS", None), ("IS", 3), ("US", [1, 2, 3]), ("FD", 0.25),
    ("AT", 0x00100010), ("AE", "NEUROLABEL"),
]


@pytest.mark.parametrize(("vr", "value"), PLAIN_ELEMENTS)
def test_plain_elements_encode_as_pydicom_writes_them(vr: str, value: object) -> None:
    from pydicom.dataelem import DataElement
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_data_element

    from daemon.dicom.sr_document import encode_element

    element = DataElement(0x00091001, vr, value)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_data_element(buffer, element, ["iso8859"])
    assert encode_element(element, ["iso8859"]) == buffer.getvalue()
