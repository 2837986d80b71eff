"""ONNX export matches torch; the torch window pooling matches the numpy one; training helpers.

Skipped when torch (the `train` extra) is not installed.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (the 'train' extra) is not installed")
pytest.importorskip("transformers", reason="transformers (the 'train' extra) is not installed")

from daemon.inference.metadata import ModelMetadata  # noqa: E402
from daemon.inference.windows import ReportTokenizer, WindowSpec, pool_windows  # noqa: E402
from daemon.labels import LABEL_KEYS  # noqa: E402
from daemon.training.augment import augment, drop_headings, split_sections  # noqa: E402
from daemon.training.export import export_fp32, onnx_probabilities, torch_probabilities  # noqa: E402
from daemon.training.model import build_model, combine_windows, pretrained_encoder_dir  # noqa: E402
from daemon.training.train import parse_records, report_batches, split_records  # noqa: E402

TEXTS = [
    "Normal MRI brain.",
    "Acute infarct in the left MCA territory with restricted diffusion. No haemorrhage.",
    "",
    "Extensive white matter hyperintensities in keeping with small vessel disease. " * 30,
]


def _metadata(spec: WindowSpec) -> ModelMetadata:
    return ModelMetadata(
        name="test", version="1", release="t", labels=LABEL_KEYS, thresholds={k: 0.5 for k in LABEL_KEYS},
        threshold_rule="f1", window=spec, onnx_files={"cpu": "m.onnx"}, encoder="test",
    )


@pytest.fixture(scope="module")
def small_model():  # one layer keeps the test quick; the graph is the same as the shipped one's
    torch.manual_seed(0)
    model = build_model(layers=1).eval()
    with torch.no_grad():  # a non-trivial head, so that parity is not checked on constants
        model.head.weight.normal_(std=0.5)
        model.head.score.weight.normal_(std=0.5)
    return model


def test_onnx_export_matches_torch(small_model, tmp_path: Path) -> None:
    spec = WindowSpec(max_tokens=64, overlap=16)  # several windows for the long text
    tokenizer = ReportTokenizer(pretrained_encoder_dir() / "tokenizer.json")
    path = tmp_path / "model.onnx"
    export_fp32(small_model, path)
    expected = torch_probabilities(small_model, tokenizer, TEXTS, _metadata(spec))
    got = onnx_probabilities(path, tokenizer, TEXTS, _metadata(spec))
    assert got.shape == (len(TEXTS), len(LABEL_KEYS))
    assert np.abs(got - expected).max() < 1e-4
    assert np.abs(expected - 0.5).max() > 0.01


def test_torch_window_combination_matches_numpy_pooling() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(7, 8))
    lse = rng.normal(size=(7, 8)) * 4
    index = np.array([0, 0, 1, 2, 2, 2, 3])
    expected = pool_windows(logits, lse, index, 4)
    got = combine_windows(torch.from_numpy(logits), torch.from_numpy(lse), torch.from_numpy(index), 4)
    assert np.allclose(got.numpy(), expected)


def test_records_are_validated_with_file_and_line() -> None:
    good = '{"id": "a", "text": "x", "labels": {' + ", ".join(f'"{k}": 0' for k in LABEL_KEYS) + "}}"
    assert parse_records([good], "f.jsonl")[0].labels == (0,) * 8
    from daemon.training.train import TrainingDataError

    with pytest.raises(TrainingDataError, match=r"f.jsonl:2: missing label key 'mass'"):
        parse_records([good, '{"id": "b", "text": "y", "labels": {"abnormal": 1, "acute_stroke": 0}}'], "f.jsonl")


def test_split_is_deterministic_and_disjoint() -> None:
    records = parse_records(
        ['{"id": "%d", "text": "t", "labels": {%s}}' % (i, ", ".join(f'"{k}": 0' for k in LABEL_KEYS)) for i in range(40)],
        "x",
    )
    train, validation = split_records(records, 0.25, seed=3)
    assert len(validation) == 10 and len(train) == 30
    assert {r.id for r in train}.isdisjoint({r.id for r in validation})
    assert split_records(records, 0.25, seed=3) == (train, validation)


def test_batches_respect_the_token_budget_and_cover_every_report() -> None:
    spec = WindowSpec(max_tokens=128, overlap=32)
    lengths = [5, 40, 126, 127, 300, 90, 12, 1000, 64, 64]
    batches = report_batches(lengths, spec, max_tokens=512, rng=random.Random(0))
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    from daemon.training.train import window_shape

    for batch in batches:
        shapes = [window_shape(lengths[i], spec) for i in batch]
        cost = sum(count for count, _ in shapes) * max(width for _, width in shapes)
        assert cost <= 512 or len(batch) == 1


def test_augmentation_keeps_findings_and_clinical_headings() -> None:
    text = (
        "MRI HEAD\nClinical details: Known MS.\nTechnique: DWI, FLAIR.\n"
        "Findings: No restricted diffusion. Several periventricular lesions.\nConclusion: Stable demyelination."
    )
    assert len(split_sections(text)) == 5
    rng = random.Random(0)
    for _ in range(200):
        varied = augment(text, rng, probability=1.0)
        assert re.search(r"\bNo\b", varied)  # short words (negations) are never corrupted
        assert re.search(r"\bMS\b", varied)
    # Dropping headings keeps the clinical question marked as such.
    dropped = drop_headings(text)
    assert "Clinical details: Known MS." in dropped and "Findings:" not in dropped and "Conclusion:" not in dropped


def test_int8_export_run_one_window_per_call_is_batch_independent_and_close_to_torch(small_model, tmp_path: Path) -> None:
    import shutil

    from daemon.inference.metadata import TOKENIZER_FILE
    from daemon.inference.runtime import OnnxReportModel
    from daemon.training.export import CPU_FILE, export_variants

    spec = WindowSpec(max_tokens=64, overlap=16)  # several windows for the long text
    version_dir = tmp_path / "1"
    export_variants(small_model, version_dir, gpu=False)
    shutil.copyfile(pretrained_encoder_dir() / "tokenizer.json", version_dir / TOKENIZER_FILE)
    metadata = ModelMetadata(
        name="test", version="1", release="t", labels=LABEL_KEYS, thresholds={k: 0.5 for k in LABEL_KEYS},
        threshold_rule="f1", window=spec, onnx_files={"cpu": CPU_FILE}, encoder="test",
    )
    metadata.save(version_dir)
    served = OnnxReportModel(version_dir)
    together = served.probabilities(TEXTS)
    alone = np.vstack([served.probabilities([text]) for text in TEXTS])
    assert np.array_equal(together, alone)
    assert np.array_equal(served.probabilities(TEXTS[::-1])[::-1], together)
    tokenizer = ReportTokenizer(version_dir / TOKENIZER_FILE)
    expected = torch_probabilities(small_model, tokenizer, TEXTS, metadata)
    # The test head's large random weights magnify int8 error (the trained model's mean is ~0.01).
    assert np.abs(together - expected).mean() < 0.1
    # A whole batch in one call is *not* batch-independent under dynamic quantisation; the runtime
    # must not do that with this graph.
    batched = onnx_probabilities(version_dir / CPU_FILE, tokenizer, TEXTS, metadata)
    per_window = onnx_probabilities(version_dir / CPU_FILE, tokenizer, TEXTS, metadata, per_window=True)
    assert np.allclose(per_window, together, atol=1e-6)
    assert not np.array_equal(batched, per_window)


def test_skip_layer_norm_is_unfused_into_the_same_computation(small_model, tmp_path: Path) -> None:
    import onnx

    from daemon.training.export import _optimized, unfuse_skip_layer_norm

    spec = WindowSpec(max_tokens=64, overlap=16)
    plain = tmp_path / "plain.onnx"
    export_fp32(small_model, plain)
    fused = _optimized(plain, small_model, use_gpu=False).model
    assert any(node.op_type == "SkipLayerNormalization" for node in fused.graph.node)
    onnx.save(fused, str(tmp_path / "fused.onnx"))
    unfused = unfuse_skip_layer_norm(onnx.load(str(tmp_path / "fused.onnx")))
    assert not any(node.op_type == "SkipLayerNormalization" for node in unfused.graph.node)
    assert any(node.op_type == "LayerNormalization" for node in unfused.graph.node)
    onnx.save(unfused, str(tmp_path / "unfused.onnx"))

    tokenizer = ReportTokenizer(pretrained_encoder_dir() / "tokenizer.json")
    metadata = _metadata(spec)
    expected = onnx_probabilities(tmp_path / "fused.onnx", tokenizer, TEXTS, metadata)
    actual = onnx_probabilities(tmp_path / "unfused.onnx", tokenizer, TEXTS, metadata)
    assert np.allclose(actual, expected, atol=1e-5)


def test_repository_version_gets_the_python_backend_model(tmp_path: Path) -> None:
    """Without <version>/model.py Triton cannot load a version that `neurolabel train` wrote."""
    from daemon.training.export import PYTHON_BACKEND_FILE, PYTHON_BACKEND_MODEL, write_repository

    version_dir = tmp_path / "neurolabel_report" / "2"
    version_dir.mkdir(parents=True)
    write_repository(_metadata(WindowSpec(max_tokens=64, overlap=16)), pretrained_encoder_dir() / "tokenizer.json",
                     version_dir.parent, version_dir)
    assert (version_dir / PYTHON_BACKEND_FILE).read_bytes() == PYTHON_BACKEND_MODEL.read_bytes()
    assert (version_dir.parent / "config.pbtxt").is_file()
