"""The labels SR: built with highdicom, coded, referencing the study, read back to the same labels."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from daemon.dicom.private_tags import STATUS_WITHDRAWN
from daemon.dicom.sr import (
    ABSENT,
    COMPREHENSIVE_SR_SOP_CLASS,
    FINDINGS,
    MANUFACTURER,
    PRESENT,
    PRIVATE_SCHEME,
    build_label_sr,
    read_label_sr,
    read_label_sr_state,
    sr_identity,
)
from daemon.labels import LABEL_KEYS, LabelRecord

SNOMED_LABELS = {"abnormal", "acute_stroke", "atrophy", "vascular", "inflammation", "encephalomalacia"}


def study_instances(count: int = 3) -> list[pydicom.Dataset]:
    """`count` instances of one study in two series, made from MR_small."""
    template = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    result = []
    for index in range(count):
        dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        dataset.SOPInstanceUID = f"{template.SOPInstanceUID}.{index + 1}"
        dataset.SeriesInstanceUID = f"{template.SeriesInstanceUID}.{index % 2}"
        dataset.AccessionNumber = "ACC-7"
        result.append(dataset)
    return result


def make_record(study_uid: str, *, seed: int = 0) -> LabelRecord:
    return LabelRecord(
        study_instance_uid=study_uid,
        accession_number="ACC-7",
        labels={key: (index + seed) % 2 for index, key in enumerate(LABEL_KEYS)},
        probabilities={key: (index + 1) / 9 for index, key in enumerate(LABEL_KEYS)},
        model="neurolabel_report:3",
        labelled_at=dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.timezone.utc),
    )


def encoded(sr: pydicom.Dataset) -> pydicom.Dataset:
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def walk(items):  # type: ignore[no-untyped-def]
    for item in items:
        yield item
        yield from walk(item.get("ContentSequence", []))


def test_sr_reads_back_to_the_same_labels() -> None:
    evidence = study_instances()
    study_uid = str(evidence[0].StudyInstanceUID)
    record = make_record(study_uid)
    sr = encoded(build_label_sr(record, evidence, sr_identity(study_uid, 7)))

    assert read_label_sr(sr) == record
    assert sr.SOPClassUID == COMPREHENSIVE_SR_SOP_CLASS
    assert sr.Modality == "SR"
    assert sr.StudyInstanceUID == study_uid
    assert sr.SeriesInstanceUID not in {d.SeriesInstanceUID for d in evidence}
    assert sr.AccessionNumber == "ACC-7"
    assert sr.PatientID == evidence[0].PatientID


def test_sr_references_every_instance_of_the_study() -> None:
    evidence = study_instances(5)
    study_uid = str(evidence[0].StudyInstanceUID)
    sr = encoded(build_label_sr(make_record(study_uid), evidence, sr_identity(study_uid, 1)))
    referenced = {
        instance.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for instance in series.ReferencedSOPSequence
    }
    assert referenced == {d.SOPInstanceUID for d in evidence}


def test_sr_codes_each_label_and_names_the_model_as_device() -> None:
    evidence = study_instances(1)
    study_uid = str(evidence[0].StudyInstanceUID)
    record = make_record(study_uid, seed=1)
    sr = encoded(build_label_sr(record, evidence, sr_identity(study_uid, 1)))
    items = list(walk(sr.ContentSequence))

    for key in LABEL_KEYS:
        concept = FINDINGS[key]
        assert concept.scheme == ("SCT" if key in SNOMED_LABELS else PRIVATE_SCHEME)
        codes = [i for i in items if i.ValueType == "CODE" and concept.matches(i.ConceptNameCodeSequence[0])]
        assert len(codes) == 1
        expected = PRESENT if record.labels[key] else ABSENT
        assert expected.matches(codes[0].ConceptCodeSequence[0])
        numbers = [i for i in items if i.ValueType == "NUM" and concept.matches(i.ConceptNameCodeSequence[0])]
        assert len(numbers) == 1
        assert float(numbers[0].MeasuredValueSequence[0].FloatingPointValue) == pytest.approx(record.probabilities[key])
    texts = {i.ConceptNameCodeSequence[0].CodeMeaning: i.TextValue for i in items if i.ValueType == "TEXT"}
    assert texts["Device Observer Manufacturer"] == MANUFACTURER
    assert texts["Device Observer Name"] == "neurolabel_report"
    assert texts["Algorithm Name"] == "neurolabel_report"
    assert texts["Algorithm Version"] == "3"
    assert [i.CodingSchemeDesignator for i in sr.CodingSchemeIdentificationSequence] == [PRIVATE_SCHEME]
    assert sr.Manufacturer == MANUFACTURER and sr.SoftwareVersions == "3"


def test_newer_sr_lists_the_one_it_replaces() -> None:
    evidence = study_instances(1)
    study_uid = str(evidence[0].StudyInstanceUID)
    first = encoded(build_label_sr(make_record(study_uid), evidence, sr_identity(study_uid, 1)))
    second = encoded(
        build_label_sr(
            make_record(study_uid, seed=1),
            evidence,
            sr_identity(study_uid, 2, instance_number=2),
            previous_versions=[first],
        )
    )
    assert second.SeriesInstanceUID == first.SeriesInstanceUID
    assert second.SOPInstanceUID != first.SOPInstanceUID
    assert second.InstanceNumber > first.InstanceNumber
    predecessor = second.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == first.SOPInstanceUID


def test_withdrawal_sr_carries_no_labels() -> None:
    evidence = study_instances(1)
    study_uid = str(evidence[0].StudyInstanceUID)
    withdrawn_at = dt.datetime(2024, 6, 2, 9, 0, tzinfo=dt.timezone.utc)
    sr = encoded(
        build_label_sr(
            make_record(study_uid), evidence, sr_identity(study_uid, 1, withdrawn=True), withdrawn_at=withdrawn_at
        )
    )
    assert read_label_sr(sr) is None
    state = read_label_sr_state(sr)
    assert state is not None and state.status == STATUS_WITHDRAWN and state.labelled_at == withdrawn_at
    assert state.model == "neurolabel_report:3"


def test_identity_is_deterministic() -> None:
    assert sr_identity("1.2.3", 4) == sr_identity("1.2.3", 4)
    assert sr_identity("1.2.3", 4).sop_instance_uid != sr_identity("1.2.3", 5).sop_instance_uid
    assert sr_identity("1.2.3", 4).sop_instance_uid != sr_identity("1.2.3", 4, withdrawn=True).sop_instance_uid
    assert sr_identity("1.2.3", 4).series_instance_uid == sr_identity("1.2.3", 5).series_instance_uid
    one_order = sr_identity("1.2.3", 4, evidence_uids=["1.1", "1.2"])
    assert one_order == sr_identity("1.2.3", 4, evidence_uids=["1.2", "1.1"])
    assert sr_identity("1.2.3", 4, evidence_uids=["1.1"]) != sr_identity("1.2.3", 4, evidence_uids=["1.1", "1.2"])


@pytest.mark.parametrize("name", ["MR_small.dcm", "test-SR.dcm"])
def test_other_objects_carry_no_sr_labels(name: str) -> None:
    assert read_label_sr(pydicom.dcmread(get_testdata_file(name))) is None


def test_evidence_without_type2_attributes_is_completed() -> None:
    evidence = study_instances(1)
    for keyword in ("PatientBirthDate", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        if keyword in evidence[0]:
            delattr(evidence[0], keyword)
    study_uid = str(evidence[0].StudyInstanceUID)
    sr = encoded(build_label_sr(make_record(study_uid), evidence, sr_identity(study_uid, 1)))
    assert sr.AccessionNumber == "ACC-7"  # from the labels when the images have none
    assert sr.PatientBirthDate == "" and sr.StudyID == ""
    assert "PatientBirthDate" not in evidence[0]  # the caller's dataset is left as it was


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="DCMTK's dsrdump is not installed")
def test_dcmtk_reads_the_sr_as_a_valid_document(tmp_path: Path) -> None:
    evidence = study_instances(2)
    study_uid = str(evidence[0].StudyInstanceUID)
    path = tmp_path / "sr.dcm"
    build_label_sr(make_record(study_uid), evidence, sr_identity(study_uid, 1)).save_as(path, enforce_file_format=True)
    result = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    # DCMTK 3.6.7 flags the UTC offset "+0000" of a DT, which PS3.5 allows; nothing else may be reported.
    problems = [
        line for line in result.stderr.splitlines() if line.strip() and "ObservationDateTime" not in line
    ]
    assert problems == []
    assert "Cerebral atrophy" in result.stdout and "99NEUROLABEL" in result.stdout
