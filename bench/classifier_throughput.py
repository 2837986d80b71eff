"""Reports/s of the shipped classifier through the bundled Triton, against a naive PyTorch baseline.

    python bench/classifier_throughput.py [--reports 2000] [--baseline-reports 150]

Reports come from the synthetic generator (its own length mix, 15 to 400 words; a seed other than
the training corpus's). The Triton figure is `TritonClassifier.classify` end to end (gRPC, text in,
tokenisation + windows + int8 onnxruntime + pooling inside Triton, labels out) with several requests
in flight. The baseline is the same architecture in PyTorch fp32, one report per call, as a naive
script would run it. Needs the `server` and `train` extras.

On a shared machine the rate depends on what else runs; the CPU time per report (tritonserver, its
python-backend stubs and this client, from /proc) does much less, so it is printed too, with the
rate two otherwise idle cores would allow. Run it under `flock /tmp/neurolabel-cpu.lock` here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from daemon.config import TRITON_CPU_PRIORITIES, parse_config  # noqa: E402
from daemon.inference.metadata import ModelMetadata, latest_version_dir  # noqa: E402
from daemon.inference.triton_client import TritonClassifier  # noqa: E402
from daemon.inference.triton_server import BundledTriton, grpc_url, with_concrete_ports  # noqa: E402
from daemon.training.generator import generate_corpus  # noqa: E402

BENCH_SEED = 777


def report_texts(count: int) -> list[str]:
    return [report.text for report in generate_corpus(count, BENCH_SEED)]


def length_summary(texts: list[str]) -> dict[str, float]:
    words = sorted(len(text.split()) for text in texts)
    return {
        "min_words": words[0],
        "median_words": statistics.median(words),
        "mean_words": round(statistics.fmean(words), 1),
        "p90_words": words[int(0.9 * (len(words) - 1))],
        "max_words": words[-1],
    }


def process_tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of `root` and its live descendants (Linux /proc), e.g. tritonserver and its stubs."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(times.get(pid, 0.0) for pid in tree)


def client_cpu_seconds() -> float:
    usage = os.times()
    return usage.user + usage.system


async def triton_rate(
    texts: list[str], repository: Path, model: str, batch_size: int, in_flight: int, cpu_priority: str
) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="neurolabel-bench-") as state:
        config = parse_config(
            f'[daemon]\nstate_dir = "{state}"\n[triton]\nmodel_repository = "{repository}"\nmodel = "{model}"\n'
            f"http_port = 0\ngrpc_port = 0\nmetrics_port = 0\ncpu_priority = \"{cpu_priority}\"\n"
        )
        config = with_concrete_ports(config)
        server = BundledTriton(config.triton, config.daemon.state_dir)
        await server.start()
        try:
            async with TritonClassifier(
                grpc_url(config), model, timeout_seconds=600, batch_size=batch_size, max_in_flight=in_flight
            ) as classifier:
                await classifier.classify(texts[:64])  # warm-up: sessions, thread pools, gRPC channel
                assert server.pid is not None
                server_cpu, client_cpu = process_tree_cpu_seconds(server.pid), client_cpu_seconds()
                started = time.perf_counter()
                predictions = await classifier.classify(texts)
                seconds = time.perf_counter() - started
                server_cpu = process_tree_cpu_seconds(server.pid) - server_cpu
                client_cpu = client_cpu_seconds() - client_cpu
        finally:
            await server.stop(time.monotonic() + 30)
    assert len(predictions) == len(texts)
    cpu_ms = 1000 * (server_cpu + client_cpu) / len(texts)
    return {
        "reports": len(texts),
        "seconds": round(seconds, 2),
        "reports_per_s": round(len(texts) / seconds, 1),
        # CPU time spent per report by tritonserver (+ stubs) and this client: what the work costs,
        # whatever else the machine is doing; 2 cores / this = the rate two idle cores would allow.
        "cpu_ms_per_report": {"server": round(1000 * server_cpu / len(texts), 2), "client": round(1000 * client_cpu / len(texts), 2), "total": round(cpu_ms, 2)},
        "two_core_capacity_reports_per_s": round(2000 / cpu_ms, 1),
    }


def baseline_rate(texts: list[str], metadata: ModelMetadata, checkpoint: Path | None, threads: int) -> dict[str, float]:
    """PyTorch fp32, one report per call: tokenise, window, forward, pool, threshold."""
    import numpy as np
    import torch

    from daemon.inference.windows import ReportTokenizer, apply_thresholds
    from daemon.training.export import torch_probabilities
    from daemon.training.model import build_model, pretrained_encoder_dir

    torch.set_num_threads(threads)
    layers = int(metadata.training.get("options", {}).get("encoder_layers", 6))
    model = build_model(layers=layers).eval()
    if checkpoint is not None and checkpoint.is_file():
        try:
            model.load_state_dict(torch.load(checkpoint, map_location="cpu"))
        except RuntimeError:  # weights of another architecture: speed does not depend on the values
            pass
    tokenizer = ReportTokenizer(pretrained_encoder_dir() / "tokenizer.json")
    thresholds = np.asarray(metadata.threshold_list)
    torch_probabilities(model, tokenizer, texts[:2], metadata)  # warm-up
    started = time.perf_counter()
    for text in texts:
        apply_thresholds(torch_probabilities(model, tokenizer, [text], metadata), thresholds)
    seconds = time.perf_counter() - started
    return {"reports": len(texts), "seconds": round(seconds, 2), "reports_per_s": round(len(texts) / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=2000, help="reports sent through Triton")
    parser.add_argument("--baseline-reports", type=int, default=150, help="reports for the slow PyTorch baseline")
    parser.add_argument("--batch-size", type=int, default=8, help="reports per Triton request")
    parser.add_argument("--in-flight", type=int, default=8, help="concurrent Triton requests")
    parser.add_argument("--cpu-priority", choices=TRITON_CPU_PRIORITIES, default="normal",
                        help="[triton] cpu_priority of the bundled server (the daemon's default, idle, yields to intake "
                             "and to anything else running; normal measures the classifier itself)")
    parser.add_argument("--repository", type=Path, default=REPO_ROOT / "triton_models")
    parser.add_argument("--model", default="neurolabel_report")
    parser.add_argument("--checkpoint", type=Path, default=REPO_ROOT / "var" / "training" / "model.pt",
                        help="trained torch weights for the baseline (speed does not depend on them)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for the baseline")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if args.reports < 1 or args.baseline_reports < 1:
        parser.error("--reports and --baseline-reports must be at least 1 (the baseline runs in the same run)")

    texts = report_texts(max(args.reports, args.baseline_reports))
    metadata = ModelMetadata.load(latest_version_dir(args.repository / args.model))
    triton = asyncio.run(
        triton_rate(texts[: args.reports], args.repository, args.model, args.batch_size, args.in_flight, args.cpu_priority)
    )
    baseline = baseline_rate(texts[: args.baseline_reports], metadata, args.checkpoint, args.threads)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "model": f"{metadata.name}:{metadata.version} ({metadata.encoder}; window {metadata.window.max_tokens}/{metadata.window.overlap})",
        "lengths": length_summary(texts[: args.reports]),
        "triton": triton | {"batch_size": args.batch_size, "in_flight": args.in_flight, "cpu_priority": args.cpu_priority},
        "baseline_pytorch_fp32_one_per_call": baseline,
        "ratio": round(triton["reports_per_s"] / baseline["reports_per_s"], 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"machine:  {result['machine']}")
    print(f"model:    {result['model']}")
    print(f"lengths:  {result['lengths']}")
    print(f"triton:   {triton['reports_per_s']} reports/s ({triton['reports']} reports in {triton['seconds']} s, "
          f"{args.batch_size} per request, {args.in_flight} in flight)")
    print(f"cpu:      {triton['cpu_ms_per_report']} CPU-ms per report (server tree, client); "
          f"2 idle cores: {triton['two_core_capacity_reports_per_s']} reports/s; load average {os.getloadavg()[0]:.1f}")
    print(f"baseline: {baseline['reports_per_s']} reports/s (PyTorch fp32, one report per call, {baseline['reports']} reports)")
    print(f"ratio:    {result['ratio']}x")


if __name__ == "__main__":
    main()
