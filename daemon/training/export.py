"""Export a trained WindowModel into a Triton model version folder.

Writes, into triton_models/<name>/<version>/:
  model.py         the Triton python-backend model (daemon/inference/triton_backend/model.py)
  model.int8.onnx  fused graph, dynamically quantised to int8 (CPU serving, one window per call)
  model.fp16.onnx  fused graph in fp16 with fp32 inputs/outputs (GPU serving)
  tokenizer.json, metadata.json
and triton_models/<name>/config.pbtxt (CPU) and configs/gpu.pbtxt (GPU variant).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from daemon.inference.metadata import ONNX_INPUTS, ONNX_OUTPUTS, TOKENIZER_FILE, ModelMetadata
from daemon.inference.triton_config import CPU_SETTINGS, GPU_CONFIG_NAME, GPU_SETTINGS, render_config
from daemon.inference.windows import ReportTokenizer, batch_windows, pool_windows, sigmoid
from daemon.training.model import WindowModel, combine_windows

log = logging.getLogger("neurolabel.training.export")

ONNX_OPSET = 17
# The Triton python-backend model that every version folder needs (Triton loads <version>/model.py); the
# copy in triton_models/ is this file.
PYTHON_BACKEND_MODEL = Path(__file__).resolve().parents[1] / "inference" / "triton_backend" / "model.py"
PYTHON_BACKEND_FILE = "model.py"
CPU_FILE = "model.int8.onnx"
GPU_FILE = "model.fp16.onnx"
ONNX_FILES = {"cpu": CPU_FILE, "gpu": GPU_FILE}
# Probability differences accepted between torch fp32 and the exported graphs (int8: mean over
# reports and labels; single probabilities near 0.5 move more). Thresholds are chosen on the int8
# graph's own outputs.
FP32_TOLERANCE = 1e-4
INT8_MEAN_TOLERANCE = 0.02


@dataclass(frozen=True)
class ParityReport:
    fp32_max_abs: float
    int8_max_abs: float
    int8_mean_abs: float


def export_fp32(model: WindowModel, path: Path) -> None:
    """Plain ONNX graph of the window model, dynamic in windows and tokens."""
    model = model.eval()
    # The eager attention graph is the pattern onnxruntime's transformer optimizer fuses.
    previous = model.encoder.config._attn_implementation
    model.encoder.set_attn_implementation("eager")
    ids = torch.tensor([[101, 2053, 9553, 102, 0], [101, 2053, 9553, 2000, 102]], dtype=torch.int64)
    attention = (ids != 0).to(torch.int64)
    pool = attention.clone()
    pool[:, 0] = 0
    axes = {name: {0: "windows", 1: "tokens"} for name in ONNX_INPUTS} | {
        name: {0: "windows"} for name in ONNX_OUTPUTS
    }
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, attention, pool),
            str(path),
            input_names=list(ONNX_INPUTS),
            output_names=list(ONNX_OUTPUTS),
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    model.encoder.set_attn_implementation(previous)


def _optimized(path: Path, model: WindowModel, *, use_gpu: bool):  # -> onnxruntime.transformers OnnxModel
    from onnxruntime.transformers.optimizer import optimize_model

    config = model.encoder.config
    return optimize_model(
        str(path),
        model_type="bert",
        num_heads=config.num_attention_heads,
        hidden_size=config.hidden_size,
        use_gpu=use_gpu,
    )


def quantize_cpu(fused: Path, target: Path) -> None:
    """Dynamic int8 quantisation of the fused graph (QAttention, DynamicQuantizeMatMul, int8 embeddings).

    Dynamic quantisation scales activations per tensor, i.e. per onnxruntime call: over a batch of
    windows, a report's result would depend on its batch-mates. The CPU runtime therefore runs this
    graph one window per call (runtime.PER_WINDOW_VARIANTS), which makes every window's
    scale its own and the result independent of how Triton batches requests; with no padding either,
    one window per call is also the fastest way to run it on few cores.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        fused,
        target,
        weight_type=QuantType.QInt8,
        # The fused graph has contrib ops whose outputs shape inference cannot type.
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    onnx.save(unfuse_skip_layer_norm(onnx.load(str(target))), str(target))


def unfuse_skip_layer_norm(graph: onnx.ModelProto) -> onnx.ModelProto:
    """Each SkipLayerNormalization node replaced by Add (input + skip), Add (+ bias) and LayerNormalization.

    The same computation, but onnxruntime's CPU SkipLayerNormalization kernel (1.31) is about 5x slower
    than its LayerNormalization for one window of MiniLM (0.5 against 0.1 ms for 230 x 384 values), ~20 %
    of the int8 graph's time (docs/benchmarks.md, "Report classifier"). onnxruntime's CPU session does
    not fuse the nodes back. Applied after quantisation, so that the quantised weights stay the same.
    """
    nodes: list[onnx.NodeProto] = []
    for node in graph.graph.node:
        if node.op_type != "SkipLayerNormalization" or len(node.output) != 1:
            nodes.append(node)
            continue
        x, skip, gamma, beta, *rest = node.input
        bias = rest[0] if rest else ""
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        total = f"{node.output[0]}_residual"
        nodes.append(onnx.helper.make_node("Add", [x, skip], [total], name=f"{node.name}_residual"))
        if bias:
            nodes.append(onnx.helper.make_node("Add", [total, bias], [f"{total}_bias"], name=f"{node.name}_bias"))
            total = f"{total}_bias"
        inputs = [total, gamma] + ([beta] if beta else [])
        nodes.append(
            onnx.helper.make_node(
                "LayerNormalization", inputs, [node.output[0]], name=f"{node.name}_norm", axis=-1, epsilon=epsilon
            )
        )
    del graph.graph.node[:]
    graph.graph.node.extend(nodes)
    return graph


def export_variants(model: WindowModel, version_dir: Path, *, gpu: bool = True) -> None:
    version_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="neurolabel-export-") as tmp:
        plain = Path(tmp) / "model.fp32.onnx"
        export_fp32(model, plain)
        fused = Path(tmp) / "model.fused.onnx"
        _optimized(plain, model, use_gpu=False).save_model_to_file(str(fused))
        quantize_cpu(fused, version_dir / CPU_FILE)
        if gpu:
            fp16 = _optimized(plain, model, use_gpu=True)
            fp16.convert_float_to_float16(keep_io_types=True)
            fp16.save_model_to_file(str(version_dir / GPU_FILE))


def write_repository(
    metadata: ModelMetadata, tokenizer_json: Path, model_dir: Path, version_dir: Path
) -> None:
    """Metadata, tokenizer, the python-backend model and both Triton configs (CPU default, GPU variant)."""
    shutil.copyfile(tokenizer_json, version_dir / TOKENIZER_FILE)
    shutil.copyfile(PYTHON_BACKEND_MODEL, version_dir / PYTHON_BACKEND_FILE)
    metadata.save(version_dir)
    (model_dir / "config.pbtxt").write_text(render_config(metadata, CPU_SETTINGS), encoding="utf-8")
    (model_dir / "configs").mkdir(exist_ok=True)
    (model_dir / "configs" / f"{GPU_CONFIG_NAME}.pbtxt").write_text(
        render_config(metadata, GPU_SETTINGS), encoding="utf-8"
    )


def torch_probabilities(model: WindowModel, tokenizer: ReportTokenizer, texts: Sequence[str], metadata: ModelMetadata) -> np.ndarray:
    windows = tokenizer.windows(texts, metadata.window)
    batch = batch_windows(windows, len(texts), tokenizer.special.pad)
    model = model.eval()
    with torch.no_grad():
        logits, lse = model(
            torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask), torch.from_numpy(batch.pool_mask)
        )
        report = combine_windows(logits, lse, torch.from_numpy(batch.report_index), len(texts))
    return torch.sigmoid(report).numpy()


def onnx_probabilities(
    path: Path, tokenizer: ReportTokenizer, texts: Sequence[str], metadata: ModelMetadata, *, per_window: bool = False
) -> np.ndarray:
    """Transformer probabilities of an ONNX graph: all windows padded into one call, or one call per window."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    windows = tokenizer.windows(texts, metadata.window)
    groups = [[window] for window in windows] if per_window else [windows]
    outputs = []
    for group in groups:
        batch = batch_windows(group, len(texts), tokenizer.special.pad)
        feeds = dict(zip(ONNX_INPUTS, (batch.input_ids, batch.attention_mask, batch.pool_mask)))
        outputs.append(session.run(list(ONNX_OUTPUTS), feeds))
    logits = np.concatenate([logits for logits, _ in outputs])
    lse = np.concatenate([lse for _, lse in outputs])
    report_index = np.asarray([window.report for window in windows], dtype=np.int64)
    return sigmoid(pool_windows(logits, lse, report_index, len(texts)))


def check_parity(model: WindowModel, version_dir: Path, metadata: ModelMetadata, texts: Sequence[str]) -> ParityReport:
    """Compare the int8 graph (and a fresh fp32 graph) with torch on `texts`; raise if beyond tolerance."""
    tokenizer = ReportTokenizer(version_dir / TOKENIZER_FILE)
    expected = torch_probabilities(model, tokenizer, texts, metadata)
    with tempfile.TemporaryDirectory(prefix="neurolabel-parity-") as tmp:
        plain = Path(tmp) / "model.fp32.onnx"
        export_fp32(model, plain)
        fp32 = float(np.abs(onnx_probabilities(plain, tokenizer, texts, metadata) - expected).max())
    int8 = onnx_probabilities(version_dir / CPU_FILE, tokenizer, texts, metadata, per_window=True)
    int8_diff = np.abs(int8 - expected)
    report = ParityReport(fp32_max_abs=fp32, int8_max_abs=float(int8_diff.max()), int8_mean_abs=float(int8_diff.mean()))
    log.info("parity %s", report)
    if fp32 > FP32_TOLERANCE or report.int8_mean_abs > INT8_MEAN_TOLERANCE:
        raise RuntimeError(f"exported model differs from torch: {report}")
    return report
