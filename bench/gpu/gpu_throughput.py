"""Reports/s of the shipped classifier served by Triton on an NVIDIA GPU, with baselines in the same run.

    python bench/gpu/gpu_throughput.py --weights-dir DIR [--reports 121556] [--json]

Triton: the bundled tritonserver (nvidia-pytriton) with bench/gpu/model_repository/neurolabel_report_torch
(python backend, PyTorch fp16 on the GPU, same tokenisation/windows/pooling/thresholds as the CPU model),
driven end to end by daemon.inference.triton_client.TritonClassifier over gRPC, text in, labels out.
Baselines, same process, same GPU: naive PyTorch fp32 one report per call; and the label agreement of
the GPU fp16 model with the shipped CPU int8 ONNX model on the first reports.
DIR holds config.json (the encoder's) and model.safetensors (the trained state dict, fp16).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from daemon.config import Config  # noqa: E402
from daemon.inference.metadata import ModelMetadata, latest_version_dir  # noqa: E402
from daemon.inference.triton_client import TritonClassifier  # noqa: E402
from daemon.inference.triton_server import BundledTriton, grpc_url, with_concrete_ports  # noqa: E402
from daemon.training.generator import generate_corpus  # noqa: E402

BENCH_SEED = 777
MODEL = "neurolabel_report_torch"


def prepare_repository(target: Path, version_dir: Path, weights_dir: Path, kind: str) -> Path:
    source = Path(__file__).resolve().parent / "model_repository" / MODEL
    shutil.copytree(source, target / MODEL)
    config = target / MODEL / "config.pbtxt"
    text = config.read_text()
    for key, value in (("weights_dir", weights_dir), ("version_dir", version_dir), ("python_path", REPO_ROOT)):
        text = text.replace(f'key: "{key}" value: {{ string_value: "" }}', f'key: "{key}" value: {{ string_value: "{value}" }}')
    # The parameters clients read (labels, thresholds, version), as in the shipped config.pbtxt.
    for key, value in ModelMetadata.load(version_dir).parameters().items():
        text += f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'
    if kind != "KIND_GPU":
        text = text.replace("kind: KIND_GPU, count: 2, gpus: [ 0 ]", f"kind: {kind}, count: 1")
    config.write_text(text)
    return target


async def triton_rate(texts: list[str], repository: Path, batch_size: int, in_flight: int) -> tuple[dict, list]:
    with tempfile.TemporaryDirectory(prefix="neurolabel-gpu-") as state:
        # Built directly (not parsed): the GPU host needs only the inference part of the package.
        base = Config()
        triton = dataclasses.replace(
            base.triton, model_repository=repository, model=MODEL, http_port=0, grpc_port=0, metrics_port=0,
            startup_timeout_seconds=300.0,
        )
        config = with_concrete_ports(
            dataclasses.replace(base, daemon=dataclasses.replace(base.daemon, state_dir=Path(state)), triton=triton)
        )
        server = BundledTriton(config.triton, config.daemon.state_dir)
        try:
            await server.start()
        except Exception:
            print(Path(server.log_path).read_text()[-30000:], file=sys.stderr)
            raise
        try:
            async with TritonClassifier(
                grpc_url(config), MODEL, timeout_seconds=600, batch_size=batch_size, max_in_flight=in_flight
            ) as classifier:
                await classifier.classify(texts[:2048])  # warm-up: CUDA kernels, allocator, gRPC channel
                started = time.perf_counter()
                predictions = await classifier.classify(texts)
                seconds = time.perf_counter() - started
        finally:
            await server.stop(time.monotonic() + 30)
    rate = {"reports": len(texts), "seconds": round(seconds, 2), "reports_per_s": round(len(texts) / seconds, 1)}
    return rate, predictions


def naive_baseline(texts: list[str], metadata: ModelMetadata, version_dir: Path, weights_dir: Path) -> dict:
    """PyTorch fp32 on the same GPU, one report per call: tokenise, window, forward, pool, threshold."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from daemon.inference.windows import ReportTokenizer, apply_thresholds, batch_windows, pool_windows, sigmoid

    sys.path.insert(0, str(Path(__file__).resolve().parent / "model_repository" / MODEL / "1"))
    import bert

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    state = {k: v.float() for k, v in load_file(weights_dir / "model.safetensors").items()}
    model = bert.load(json.loads((weights_dir / "config.json").read_text()), state, len(metadata.labels))
    model = model.to(device).eval()
    tokenizer = ReportTokenizer(version_dir / "tokenizer.json")
    thresholds = np.asarray(metadata.threshold_list)

    def one(text: str) -> None:
        windows = tokenizer.windows([text], metadata.window)
        batch = batch_windows(windows, 1, tokenizer.special.pad)
        with torch.inference_mode():
            tensors = [torch.from_numpy(a).to(device) for a in (batch.input_ids, batch.attention_mask, batch.pool_mask)]
            logits, lse = model(*tensors)
        pooled = pool_windows(logits.cpu().numpy(), lse.cpu().numpy(), batch.report_index, 1)
        apply_thresholds(sigmoid(pooled), thresholds)

    for text in texts[:10]:
        one(text)
    started = time.perf_counter()
    for text in texts:
        one(text)
    seconds = time.perf_counter() - started
    return {"reports": len(texts), "seconds": round(seconds, 2), "reports_per_s": round(len(texts) / seconds, 1)}


def agreement_with_cpu_model(texts: list[str], predictions: list, version_dir: Path) -> dict:
    """Share of labels on which the GPU fp16 model agrees with the shipped CPU int8 ONNX model."""
    import numpy as np

    from daemon.inference.runtime import OnnxReportModel

    cpu_probabilities, cpu_labels = OnnxReportModel(version_dir).predict(texts)
    gpu_labels = np.asarray([[p.labels[k] for k in p.labels] for p in predictions[: len(texts)]])
    gpu_probabilities = np.asarray([[p.probabilities[k] for k in p.probabilities] for p in predictions[: len(texts)]])
    return {
        "reports": len(texts),
        "label_agreement": round(float((gpu_labels == cpu_labels).mean()), 4),
        "max_abs_probability_difference": round(float(np.abs(gpu_probabilities - cpu_probabilities).max()), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", type=Path, required=True)
    parser.add_argument("--reports", type=int, default=121_556, help="reports sent through Triton (the seed paper's count)")
    parser.add_argument("--baseline-reports", type=int, default=300)
    parser.add_argument("--agreement-reports", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64, help="reports per Triton request")
    parser.add_argument("--in-flight", type=int, default=32, help="concurrent Triton requests")
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "triton_models")
    parser.add_argument("--version-dir", type=Path, help="model version folder (metadata.json, tokenizer.json); default: the shipped one")
    parser.add_argument("--save-predictions", type=Path, help="write the first --agreement-reports predictions here")
    parser.add_argument("--kind", default="KIND_GPU", help="instance kind (KIND_CPU for a smoke test without a GPU)")
    args = parser.parse_args()

    version_dir = args.version_dir or latest_version_dir(args.repository / "neurolabel_report")
    metadata = ModelMetadata.load(version_dir)
    distinct = [report.text for report in generate_corpus(20_000, BENCH_SEED)]
    texts = [distinct[i % len(distinct)] for i in range(args.reports)]
    with tempfile.TemporaryDirectory(prefix="neurolabel-gpu-repo-") as folder:
        repository = prepare_repository(Path(folder), version_dir, args.weights_dir.resolve(), args.kind)
        triton, predictions = asyncio.run(triton_rate(texts, repository, args.batch_size, args.in_flight))
    if args.save_predictions:
        args.save_predictions.write_text(json.dumps(
            [{"id": f"bench-{i}", "probabilities": p.probabilities, "labels": p.labels, "model": p.model}
             for i, p in enumerate(predictions[: args.agreement_reports])]
        ))
    result = {
        "machine": platform.node(),
        "model": f"{metadata.name}:{metadata.version} served as {MODEL} (PyTorch fp16, python backend, KIND_GPU x2)",
        "triton": triton | {"batch_size": args.batch_size, "in_flight": args.in_flight},
        "baseline_pytorch_fp32_one_per_call_gpu": naive_baseline(distinct[: args.baseline_reports], metadata, version_dir, args.weights_dir),
    }
    result["ratio"] = round(triton["reports_per_s"] / result["baseline_pytorch_fp32_one_per_call_gpu"]["reports_per_s"], 1)
    if (version_dir / metadata.onnx_files.get("cpu", "")).is_file():
        result["agreement_with_cpu_int8"] = agreement_with_cpu_model(texts[: args.agreement_reports], predictions, version_dir)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
