from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from daemon.cli import EXIT_OK, EXIT_USAGE, main
from daemon.inference.metadata import ModelMetadata, latest_version_dir
from daemon.inference.runtime import OnnxReportModel
from daemon.training.prune import PruningError, attention_layers, least_important, prune_heads

MODEL_DIR = Path(__file__).resolve().parents[2] / "triton_models" / "neurolabel_report"
HEADS, HEAD_SIZE, TOKENS = 4, 8, 6
HIDDEN = HEADS * HEAD_SIZE


def _attention_graph(output_weight: np.ndarray, seed: int = 0) -> onnx.ModelProto:
    """x -> Attention (fp32, 4 heads) -> MatMul (output projection) -> y."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((HIDDEN, 3 * HIDDEN)).astype(np.float32) * 0.3
    bias = rng.standard_normal(3 * HIDDEN).astype(np.float32) * 0.1
    graph = helper.make_graph(
        [
            helper.make_node("Attention", ["x", "qkv_w", "qkv_b"], ["context"], "attention", domain="com.microsoft", num_heads=HEADS),
            helper.make_node("MatMul", ["context", "out_w"], ["y"], "projection"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, TOKENS, HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(weight, "qkv_w"),
            numpy_helper.from_array(bias, "qkv_b"),
            numpy_helper.from_array(output_weight, "out_w"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)], ir_version=9)


def _run(graph: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _without_rows(output_weight: np.ndarray, head: int) -> np.ndarray:
    zeroed = output_weight.copy()
    zeroed[head * HEAD_SIZE : (head + 1) * HEAD_SIZE] = 0.0
    return zeroed


def test_removing_a_head_is_zeroing_its_output_projection_rows() -> None:
    output_weight = np.random.default_rng(1).standard_normal((HIDDEN, HIDDEN)).astype(np.float32)
    x = np.random.default_rng(2).standard_normal((1, TOKENS, HIDDEN)).astype(np.float32)
    pruned = prune_heads(_attention_graph(output_weight), {0: [1]})

    (layer,) = attention_layers(pruned)
    assert (layer.heads, layer.head_size) == (HEADS - 1, HEAD_SIZE)
    expected = _run(_attention_graph(_without_rows(output_weight, 1)), x)
    np.testing.assert_allclose(_run(pruned, x), expected, rtol=1e-5, atol=1e-5)
    # ... and not zeroing another head's rows, nor the full model.
    assert not np.allclose(_run(pruned, x), _run(_attention_graph(_without_rows(output_weight, 2)), x), atol=1e-3)
    assert not np.allclose(_run(pruned, x), _run(_attention_graph(output_weight), x), atol=1e-3)


def test_impossible_removals_are_refused() -> None:
    graph = _attention_graph(np.eye(HIDDEN, dtype=np.float32))
    with pytest.raises(PruningError, match="keep no head"):
        prune_heads(graph, {0: range(HEADS)})
    with pytest.raises(PruningError, match="no attention layer 1"):
        prune_heads(graph, {1: [0]})
    with pytest.raises(PruningError, match="heads 0..3"):
        prune_heads(graph, {0: [4]})


def test_least_important_takes_the_smallest_scores_grouped_by_layer() -> None:
    scores = {(0, 0): 0.5, (0, 1): 0.1, (1, 0): 0.05, (1, 1): 0.3, (2, 0): 0.1}
    assert least_important(scores, 3) == {0: [1], 1: [0], 2: [0]}
    assert least_important(scores, 1) == {1: [0]}


def test_shipped_graphs_lost_the_heads_their_metadata_names() -> None:
    version_dir = latest_version_dir(MODEL_DIR)
    metadata = ModelMetadata.load(version_dir)
    pruning = metadata.training.get("pruning", {})  # an unpruned model keeps all 12 heads of every layer
    removed = {int(layer): heads for layer, heads in pruning.get("removed_heads", {}).items()}
    for file_name in metadata.onnx_files.values():  # the int8 CPU graph (QAttention) and the fp16 GPU graph (Attention)
        layers = attention_layers(onnx.load(str(version_dir / file_name)))
        assert [layer.heads for layer in layers] == [12 - len(removed.get(index, [])) for index in range(len(layers))]
        assert all(layer.head_size == 32 for layer in layers)


def test_prune_heads_command_writes_a_new_version_that_serves(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = tmp_path / "neurolabel_report"
    shutil.copytree(MODEL_DIR, model_dir, ignore=shutil.ignore_patterns("__pycache__"))
    source = latest_version_dir(model_dir)
    args = ["prune-heads", str(source), "--heads", "1", "--version", "9", "--scoring-reports", "2", "--validation-reports", "40"]
    assert main(args) == EXIT_OK

    target = model_dir / "9"
    metadata = ModelMetadata.load(target)
    assert metadata.version == "9" and latest_version_dir(model_dir) == target
    assert sum(len(h) for h in metadata.training["pruning"]["removed_heads"].values()) == 1
    assert metadata.training["pruning"]["source_version"] == source.name
    assert 'string_value: "9"' in (model_dir / "config.pbtxt").read_text()
    source_heads = sum(layer.heads for layer in attention_layers(onnx.load(str(source / "model.int8.onnx"))))
    assert sum(layer.heads for layer in attention_layers(onnx.load(str(target / "model.int8.onnx")))) == source_heads - 1
    probabilities, labels = OnnxReportModel(target).predict(["No acute intracranial abnormality.", "Large acute left MCA territory infarct."])
    assert probabilities.shape == (2, 8) and labels[1, 0] == 1
    assert json.loads((target / "metadata.json").read_text())["thresholds"] == metadata.thresholds
    capsys.readouterr()

    assert main(["prune-heads", str(tmp_path), "--heads", "1", "--version", "10"]) == EXIT_USAGE
    assert "not a model version folder" in capsys.readouterr().err
    assert main(["prune-heads", str(source), "--heads", str(source_heads), "--version", "10"]) == EXIT_USAGE
    assert "--heads must be between 1 and" in capsys.readouterr().err
