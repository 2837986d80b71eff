"""Where the int8 CPU graph spends its time: onnxruntime's per-operator profile, one thread.

    python bench/classifier_ops.py [--reports 100] [--repository triton_models]

Prints, per operator type, milliseconds per report and share of the graph's time, on generated
reports run as the Triton model runs them (one window per call). Then times SkipLayerNormalization
against the Add + LayerNormalization that the export puts in its place (daemon/training/export.py,
unfuse_skip_layer_norm), alone, on one window's worth of values, in the same run.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from daemon.inference.metadata import latest_version_dir  # noqa: E402
from daemon.inference.runtime import OnnxReportModel, RuntimeOptions, session_options  # noqa: E402
from daemon.training.export import unfuse_skip_layer_norm  # noqa: E402
from daemon.training.generator import generate_corpus  # noqa: E402


def operator_profile(version_dir: Path, texts: list[str]) -> tuple[float, dict[str, float]]:
    """(total ms/report, ms/report per operator type) from onnxruntime's profiler."""
    model = OnnxReportModel(version_dir, RuntimeOptions(intra_op_threads=1, allow_spinning=False))
    with tempfile.TemporaryDirectory() as tmp:
        options = session_options(1, allow_spinning=False)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        model.session = ort.InferenceSession(
            str(version_dir / model.metadata.onnx_files["cpu"]), sess_options=options, providers=["CPUExecutionProvider"]
        )
        model.logits(texts)
        events = json.loads(Path(model.session.end_profiling()).read_text())
    per_op: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"]
    scale = 1000 * len(texts)  # microseconds -> ms per report
    return sum(per_op.values()) / scale, {op: us / scale for op, us in per_op.most_common()}


def _session(graph: onnx.GraphProto) -> ort.InferenceSession:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), session_options(1, allow_spinning=False), providers=["CPUExecutionProvider"])


def layer_norm_pair(tokens: int, hidden: int, rounds: int) -> dict[str, float]:
    """Microseconds per call: SkipLayerNormalization and its unfused replacement, interleaved, best round."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), name) for name in ("gamma", "beta", "bias")]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, None, hidden]) for name in ("x", "skip")]
    output = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    fused_node = helper.make_node("SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], ["y"],
                                  domain="com.microsoft", epsilon=1e-12)
    fused = helper.make_graph([fused_node], "fused", inputs, output, weights)
    unfused = unfuse_skip_layer_norm(helper.make_model(helper.make_graph([fused_node], "u", inputs, output, weights))).graph
    sessions = {"SkipLayerNormalization": _session(fused), "Add + LayerNormalization": _session(unfused)}
    feeds = {"x": rng.standard_normal((1, tokens, hidden)).astype(np.float32),
             "skip": rng.standard_normal((1, tokens, hidden)).astype(np.float32)}
    outputs = [session.run(None, feeds)[0] for session in sessions.values()]
    if not np.allclose(outputs[0], outputs[1], atol=1e-4):
        raise SystemExit("the unfused layer norm does not compute what SkipLayerNormalization computes")
    best = {name: float("inf") for name in sessions}
    for _ in range(rounds):
        for name, session in sessions.items():
            started = time.perf_counter()
            for _ in range(200):
                session.run(None, feeds)
            best[name] = min(best[name], (time.perf_counter() - started) / 200 * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=100)
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "triton_models")
    parser.add_argument("--model", default="neurolabel_report")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the layer-norm pair")
    args = parser.parse_args()
    version_dir = latest_version_dir(args.repository / args.model)
    texts = [report.text for report in generate_corpus(args.reports, 777)]
    total, per_op = operator_profile(version_dir, texts)
    print(f"graph: {version_dir / 'model.int8.onnx'}, {args.reports} generated reports, one thread, profiled")
    print(f"total: {total:.2f} ms/report (profiling adds its own overhead)")
    for op, ms in list(per_op.items())[:12]:
        print(f"  {op:28s} {ms:7.3f} ms/report {100 * ms / total:5.1f} %")
    pair = layer_norm_pair(tokens=230, hidden=384, rounds=args.rounds)
    print("one window (230 x 384), microseconds per call, best of", args.rounds, "rounds:")
    for name, us in pair.items():
        print(f"  {name:28s} {us:7.1f} us")


if __name__ == "__main__":
    main()
