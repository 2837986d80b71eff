"""Classify round trip through the real bundled tritonserver with the shipped model."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from daemon.config import Config
from daemon.inference.local import LocalClassifier
from daemon.inference.prediction import InferenceUnavailable
from daemon.inference.triton_client import TritonClassifier
from daemon.inference.triton_server import BundledTriton, TritonNotInstalled, find_installation, grpc_url, with_concrete_ports
from daemon.labels import LABEL_KEYS

REPOSITORY = Path(__file__).resolve().parents[2] / "triton_models"

try:
    find_installation()
    MISSING = ""
except TritonNotInstalled as exc:
    MISSING = str(exc)

pytestmark = [pytest.mark.triton, pytest.mark.slow]

TEXTS = [
    "MRI head. Normal appearances of the brain. No acute infarct, mass or haemorrhage.",
    "CLINICAL DETAILS: ?stroke.\nFINDINGS: Restricted diffusion in the right PICA territory.\nIMPRESSION: Acute right cerebellar infarct.",
    "Known MS. Multiple periventricular and juxtacortical T2/FLAIR hyperintense lesions, two enhancing, in keeping with active demyelination.",
    "",
    "Moderate generalised cerebral volume loss, more than expected for age. " * 80,
    "Résumé: pas d'anomalie \u2014 unicode text \U0001f600 is accepted.",
]


@pytest.fixture
async def served(test_config: Config) -> AsyncIterator[Config]:
    if MISSING:
        pytest.skip(f"tritonserver binary not available: {MISSING}")
    settings = dataclasses.replace(
        test_config.triton, model_repository=REPOSITORY, http_port=0, grpc_port=0, metrics_port=0
    )
    config = with_concrete_ports(dataclasses.replace(test_config, triton=settings))
    server = BundledTriton(config.triton, config.daemon.state_dir)
    await server.start()
    try:
        yield config
    finally:
        await server.stop(deadline=time.monotonic() + 20)


async def test_classify_through_triton_matches_the_in_process_model(served: Config) -> None:
    local = LocalClassifier(REPOSITORY, "neurolabel_report")
    async with TritonClassifier(grpc_url(served), "neurolabel_report", batch_size=4) as classifier:
        assert await classifier.is_ready()
        info = await classifier.model_info()
        assert info.labels == LABEL_KEYS
        assert info.thresholds == pytest.approx((await local.model_info()).thresholds)
        predictions = await classifier.classify(TEXTS)
        assert await classifier.classify([]) == []
    expected = local.classify_sync(TEXTS)
    assert len(predictions) == len(TEXTS)
    for got, want in zip(predictions, expected):
        assert got.model == want.model == info.model
        assert np.allclose(list(got.probabilities.values()), list(want.probabilities.values()), atol=1e-4)
        assert got.labels == want.labels
    assert predictions[1].labels["acute_stroke"] == 1
    assert predictions[2].labels["inflammation"] == 1


async def test_classify_command_through_the_running_server(served: Config, tmp_path: Path) -> None:
    import asyncio

    from daemon.inference.classify_file import read_input, run_classify

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    config = dataclasses.replace(served, triton=dataclasses.replace(served.triton, url=grpc_url(served)))
    out = tmp_path / "out.jsonl"
    count, _ = await asyncio.to_thread(run_classify, config, source, out, local=False)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert count == len(TEXTS) and [line["id"] for line in lines] == [r.id for r in read_input(source)]
    assert set(lines[0]) == {"id", "probabilities", "labels", "model"}
    assert list(lines[0]["labels"]) == list(LABEL_KEYS)


async def test_unreachable_server_raises_inference_unavailable(unused_tcp_port: int) -> None:
    async with TritonClassifier(f"127.0.0.1:{unused_tcp_port}", timeout_seconds=2.0) as classifier:
        assert not await classifier.is_ready()
        with pytest.raises(InferenceUnavailable):
            await classifier.classify(["Normal MRI brain."])
