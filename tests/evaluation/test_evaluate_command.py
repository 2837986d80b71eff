"""`neurolabel evaluate`: exit codes, messages, JSON shape, predictions files and image labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.evaluation.baseline import score_report
from daemon.labels import LABEL_KEYS

REPORTS = [
    ("r1", "Acute infarct in the left MCA territory.", {"acute_stroke": 1}),
    ("r2", "Normal MRI brain.", {}),
    ("r3", "Multiple demyelinating plaques.", {"inflammation": 1}),
    ("r4", "No acute infarct. Old right PCA infarct with gliosis.", {"encephalomalacia": 1}),
    ("r5", "Left frontal meningioma.", {"mass": 1}),
    ("r6", "Normal study.", {}),
]


def _labels(positives: dict[str, int]) -> dict[str, int]:
    labels = {key: positives.get(key, 0) for key in LABEL_KEYS}
    labels["abnormal"] = int(any(positives.values()))
    return labels


@pytest.fixture()
def reports(tmp_path: Path) -> Path:
    path = tmp_path / "dev.jsonl"
    with path.open("w") as out:
        for report_id, text, positives in REPORTS:
            record = {"id": report_id, "text": text, "labels": _labels(positives)}
            if report_id in ("r1", "r2", "r4"):
                record["image_labels"] = {"acute_stroke": positives.get("acute_stroke", 0), "abnormal": 1}
            out.write(json.dumps(record) + "\n")
    return path


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["evaluate", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_baseline_json_shape(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, str(reports), "--baseline", "--json", "--bootstrap", "50")
    assert code == 0
    result = json.loads(out)
    assert result["source"] == "rule-based baseline"
    assert result["reference"] == "report" and result["reports"] == 6
    assert list(result["labels"]) == list(LABEL_KEYS)
    metrics = result["labels"]["acute_stroke"]
    for field in ("n", "positives", "auc", "auc_ci", "accuracy", "sensitivity", "specificity", "f1", "threshold"):
        assert field in metrics
    assert metrics["threshold"] == 0.5
    assert result["labels"]["atrophy"]["auc"] is None  # one class only: undefined, reported as such
    assert result["bootstrap"] == {"resamples": 50, "seed": 0, "confidence": 0.95}


def test_human_table(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, str(reports), "--baseline", "--bootstrap", "20")
    assert code == 0
    assert "encephalomalacia" in out and "AUC" in out and "n/a" in out


def test_image_reference_uses_the_subset(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, str(reports), "--baseline", "--json", "--reference", "image", "--bootstrap", "20")
    assert code == 0
    result = json.loads(out)
    assert list(result["labels"]) == ["abnormal", "acute_stroke"]
    assert result["labels"]["acute_stroke"]["n"] == 3


def test_predictions_file_joined_by_id(reports: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    predictions = tmp_path / "pred.jsonl"
    with predictions.open("w") as out:
        for report_id, text, _ in reversed(REPORTS):  # order differs from the reports file
            probabilities = score_report(text)
            labels = {key: int(value >= 0.5) for key, value in probabilities.items()}
            out.write(json.dumps({"id": report_id, "probabilities": probabilities, "labels": labels,
                                  "model": "neurolabel_report:1"}) + "\n")
    code, out, _ = _run(capsys, str(reports), "--predictions", str(predictions), "--json", "--bootstrap", "20")
    assert code == 0
    result = json.loads(out)
    assert "neurolabel_report:1" in result["source"]
    assert result["labels"]["mass"]["f1"] == 1.0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "a", "text": "x", "labels": {"abnormal": 0}}\n{"id": "b", "text": \n', "bad.jsonl:2: not valid JSON"),
        ('{"id": "a", "text": "x", "labels": {"tumour": 1}}\n', "bad.jsonl:1: labels: unknown label key 'tumour'"),
        ('{"id": "a", "text": "x", "labels": {"mass": 2}}\n', "bad.jsonl:1: labels: label 'mass' must be 0 or 1"),
        ('{"text": "x"}\n', "bad.jsonl:1: missing or empty string 'id'"),
        ('[1, 2]\n', "bad.jsonl:1: expected a JSON object"),
        ('{"id": "a", "text": "x"}\n', "no report has 'labels'"),
    ],
)
def test_bad_input_exit_code_2_names_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    code, out, err = _run(capsys, str(path), "--baseline")
    assert code == 2
    assert message in err
    assert "Traceback" not in err and out == ""


def test_missing_file_and_missing_prediction(reports: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, str(tmp_path / "absent.jsonl"), "--baseline")
    assert code == 2 and "cannot read" in err
    predictions = tmp_path / "pred.jsonl"
    predictions.write_text(json.dumps({"id": "r1", "probabilities": {k: 0.1 for k in LABEL_KEYS}}) + "\n")
    code, _, err = _run(capsys, str(reports), "--predictions", str(predictions))
    assert code == 2 and "no prediction for report id 'r2'" in err


def test_baseline_and_predictions_are_exclusive(reports: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, str(reports), "--baseline", "--predictions", str(reports))
    assert code == 2 and "alternatives" in err


def test_default_scorer_without_a_model_is_a_usage_error(
    reports: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[triton]\nmodel_repository = "{tmp_path / "no-models"}"\n')
    code, _, err = _run(capsys, str(reports), "--config", str(config))
    assert code == 2
    assert "cannot load the model" in err and "--baseline" in err
