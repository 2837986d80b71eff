"""`neurolabel classify IN.jsonl -o OUT.jsonl [--local]`: label a file of reports.

Through Triton by default: `[triton] url` when set; otherwise a bundled server already listening on
the configured gRPC port (a running daemon's), or else a bundled server started for this command on
free loopback ports. `--local` runs the same model in-process with onnxruntime.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.config import Config
from daemon.inference.prediction import Classifier, InferenceUnavailable

log = logging.getLogger("neurolabel.classify")

# Reports handed to the classifier at once; the Triton client splits them into concurrent requests.
CHUNK = 256


class ClassifyInputError(ValueError):
    """The input file is unusable; the message names the file and line."""


@dataclass(frozen=True)
class InputReport:
    id: str
    text: str


def read_input(path: Path) -> list[InputReport]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ClassifyInputError(f"cannot read {path}: {exc}") from exc
    reports: list[InputReport] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ClassifyInputError(f"{path}:{number}: not JSON ({exc.msg})") from exc
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or "id" not in item:
            raise ClassifyInputError(f"{path}:{number}: expected an object with 'id' and 'text' (a string)")
        report_id = str(item["id"])
        if report_id in seen:
            raise ClassifyInputError(f"{path}:{number}: id {report_id!r} appears twice")
        seen.add(report_id)
        reports.append(InputReport(report_id, item["text"]))
    return reports


async def classify_reports(classifier: Classifier, reports: Sequence[InputReport], out: Path) -> float:
    """Write one output line per report, in input order; returns the seconds spent classifying."""
    started = time.perf_counter()
    tmp = out.with_name(out.name + ".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w", encoding="utf-8") as sink:
        for start in range(0, len(reports), CHUNK):
            chunk = reports[start : start + CHUNK]
            predictions = await classifier.classify([report.text for report in chunk])
            for report, prediction in zip(chunk, predictions):
                sink.write(json.dumps(prediction.to_json(report.id)) + "\n")
        sink.flush()
        os.fsync(sink.fileno())
    tmp.replace(out)
    return time.perf_counter() - started


@contextlib.asynccontextmanager
async def triton_classifier(config: Config) -> AsyncIterator[Classifier]:
    """A TritonClassifier for the configured server, starting the bundled one if none is running."""
    from daemon.inference.triton_client import TritonClassifier
    from daemon.inference.triton_server import BundledTriton, grpc_url, with_concrete_ports

    settings = config.triton
    if not settings.url:
        async with TritonClassifier(grpc_url(config), settings.model, timeout_seconds=5.0) as probe:
            already_running = settings.grpc_port != 0 and await probe.is_ready()
        if not already_running:
            free = dataclasses.replace(settings, http_port=0, grpc_port=0, metrics_port=0)
            config = with_concrete_ports(dataclasses.replace(config, triton=free))
            server = BundledTriton(config.triton, config.daemon.state_dir)
            log.info("starting the bundled Triton server for this command")
            await server.start()
            try:
                async with TritonClassifier(
                    grpc_url(config), settings.model, timeout_seconds=settings.request_timeout_seconds
                ) as classifier:
                    yield classifier
            finally:
                await server.stop(time.monotonic() + config.daemon.drain_seconds)
            return
    from daemon.inference.triton_remote import connect_classifier

    async with connect_classifier(config) as classifier:
        if not await classifier.is_ready():
            raise InferenceUnavailable(f"Triton at {grpc_url(config)} has no ready model {settings.model!r}")
        yield classifier


def run_classify(config: Config, source: Path, out: Path, *, local: bool) -> tuple[int, float]:
    """Classify `source` into `out`; returns (reports, seconds)."""
    reports = read_input(source)

    async def main() -> float:
        if local:
            from daemon.inference.local import LocalClassifier

            return await classify_reports(LocalClassifier(config.triton.model_repository, config.triton.model), reports, out)
        async with triton_classifier(config) as classifier:
            return await classify_reports(classifier, reports, out)

    seconds = asyncio.run(main())
    log.info("classified %d reports in %.1f s (%.1f reports/s)", len(reports), seconds, len(reports) / max(seconds, 1e-9))
    return len(reports), seconds
