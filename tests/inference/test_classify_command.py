"""`neurolabel classify --local`: output lines, order, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.cli import EXIT_OK, EXIT_USAGE, main
from daemon.inference.classify_file import ClassifyInputError, read_input
from daemon.labels import LABEL_KEYS

REPOSITORY = Path(__file__).resolve().parents[2] / "triton_models"


def _config(tmp_path: Path, repository: Path = REPOSITORY) -> Path:
    path = tmp_path / "neurolabel.toml"
    path.write_text(f'[daemon]\nstate_dir = "{tmp_path / "var"}"\n[triton]\nmodel_repository = "{repository}"\n')
    return path


def test_classify_local_writes_one_line_per_report_in_order(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    reports = [
        {"id": "b-2", "text": "Acute infarct in the right MCA territory with restricted diffusion."},
        {"id": 17, "text": "Normal MRI brain.", "labels": {"abnormal": 0}},
        {"id": "c", "text": ""},
    ]
    source.write_text("\n".join(json.dumps(r) for r in reports) + "\n\n")
    out = tmp_path / "out" / "labels.jsonl"
    assert main(["classify", str(source), "-o", str(out), "--local", "--config", str(_config(tmp_path))]) == EXIT_OK
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["b-2", "17", "c"]
    for line in lines:
        assert set(line) == {"id", "probabilities", "labels", "model"}
        assert list(line["probabilities"]) == list(LABEL_KEYS) and list(line["labels"]) == list(LABEL_KEYS)
        assert set(line["labels"].values()) <= {0, 1}
        assert line["model"].startswith("neurolabel_report:")
    assert lines[0]["labels"]["acute_stroke"] == 1


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"id": "a", "text": "x"}\nnot json\n', "in.jsonl:2: not JSON"),
        ('{"id": "a"}\n', "in.jsonl:1: expected an object with 'id' and 'text'"),
        ('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "in.jsonl:2: id 'a' appears twice"),
    ],
)
def test_bad_input_is_named_with_its_line(tmp_path: Path, content: str, message: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(content)
    with pytest.raises(ClassifyInputError, match=message):
        read_input(source)


def test_bad_input_and_missing_model_exit_with_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.jsonl"
    code = main(["classify", str(missing), "-o", str(tmp_path / "o.jsonl"), "--local", "--config", str(_config(tmp_path))])
    assert code == EXIT_USAGE and "cannot read" in capsys.readouterr().err
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "text": "x"}\n')
    config = _config(tmp_path, repository=tmp_path / "no-models")
    code = main(["classify", str(source), "-o", str(tmp_path / "o.jsonl"), "--local", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "cannot load the model" in err and "Traceback" not in err
