"""`neurolabel inspect FILE.dcm`: labels as a classify output line; exit 1 without labels, 2 for a non-DICOM path."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from daemon.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main
from daemon.dicom.private_tags import apply_label_tags, apply_withdrawn_tags
from daemon.dicom.sr import build_label_sr, sr_identity
from daemon.labels import LABEL_KEYS, LabelRecord


def record_for(dataset: pydicom.Dataset) -> LabelRecord:
    return LabelRecord(
        study_instance_uid=str(dataset.StudyInstanceUID),
        accession_number="ACC-1",
        labels={key: index % 2 for index, key in enumerate(LABEL_KEYS)},
        probabilities={key: index / 10 + 0.05 for index, key in enumerate(LABEL_KEYS)},
        model="neurolabel_report:4",
        labelled_at=dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc),
    )


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["inspect", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("name", ["MR_small.dcm", "JPEG2000.dcm", "MR_small_implicit.dcm"])
def test_tagged_instance(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = pydicom.dcmread(get_testdata_file(name))
    record = record_for(dataset)
    apply_label_tags(dataset, record)
    path = tmp_path / "tagged.dcm"
    dataset.save_as(path)

    code, out, _ = run(capsys, str(path))

    assert code == EXIT_OK
    assert json.loads(out) == json.loads(json.dumps(record.as_output()))
    assert list(json.loads(out)) == ["id", "probabilities", "labels", "model"]


def test_labels_sr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    record = record_for(dataset)
    path = tmp_path / "sr.dcm"
    build_label_sr(record, [dataset], sr_identity(record.study_instance_uid, 1)).save_as(path, enforce_file_format=True)

    code, out, _ = run(capsys, str(path))

    assert code == EXIT_OK and json.loads(out) == json.loads(json.dumps(record.as_output()))


def test_file_without_labels(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, get_testdata_file("CT_small.dcm"))
    assert code == EXIT_FAILURE and out == "" and "carries no neurolabel labels" in err


def test_withdrawn_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    apply_withdrawn_tags(dataset, record_for(dataset), dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc))
    path = tmp_path / "withdrawn.dcm"
    dataset.save_as(path)

    code, out, err = run(capsys, str(path))

    assert code == EXIT_FAILURE and out == "" and "withdrawn" in err


def test_not_dicom_missing_or_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "report.txt"
    text.write_text("not an image")
    cases = ((text, "not a DICOM file"), (tmp_path / "absent.dcm", "no such file"), (tmp_path, "not a file"))
    for path, message in cases:
        code, out, err = run(capsys, str(path))
        assert code == EXIT_USAGE and out == "" and message in err and "Traceback" not in err
