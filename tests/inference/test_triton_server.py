"""The bundled tritonserver, started for real over a tiny test model and queried with tritonclient."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from daemon.config import Config
from daemon.inference.component import model_readiness
from daemon.inference.triton_server import (
    BundledTriton,
    TritonNotInstalled,
    child_setup,
    find_installation,
    grpc_url,
    priority_applied,
    with_concrete_ports,
)

FIXTURE_REPOSITORY = Path(__file__).resolve().parent.parent / "fixtures" / "triton_models"

try:
    find_installation()
    HAVE_TRITON = True
except TritonNotInstalled:
    HAVE_TRITON = False

pytestmark = [pytest.mark.triton, pytest.mark.skipif(not HAVE_TRITON, reason="nvidia-pytriton not installed")]


def _config(test_config: Config) -> Config:
    triton = dataclasses.replace(
        test_config.triton, model="text_length", model_repository=FIXTURE_REPOSITORY, http_port=0, grpc_port=0, metrics_port=0
    )
    return with_concrete_ports(dataclasses.replace(test_config, triton=triton))


async def test_bundled_server_serves_a_python_model_and_stops_cleanly(test_config: Config) -> None:
    import tritonclient.grpc as grpcclient

    config = _config(test_config)
    server = BundledTriton(config.triton, config.daemon.state_dir)
    await server.start()
    try:
        pid = server.pid
        assert pid is not None
        # It yields the CPU to intake ([triton] cpu_priority, "idle" by default).
        assert config.triton.cpu_priority == "idle" and os.sched_getscheduler(pid) == os.SCHED_IDLE
        assert priority_applied(pid, "idle") and not priority_applied(os.getpid(), "idle")
        assert model_readiness(grpc_url(config), "text_length") == (True, f"{grpc_url(config)} model text_length:1")
        client = grpcclient.InferenceServerClient(grpc_url(config))
        texts = np.array([[b"abc"], ["d\u00e9f g".encode()]], dtype=object)
        tensor = grpcclient.InferInput("TEXT", [2, 1], "BYTES")
        tensor.set_data_from_numpy(texts)
        result = client.infer("text_length", [tensor])
        assert result.as_numpy("LENGTH").ravel().tolist() == [3.0, 5.0]
        client.close()
    finally:
        await server.stop(deadline=time.monotonic() + 20)
    assert server.pid is None
    assert not _alive(pid)
    assert server.log_path.exists()


async def test_bundled_server_is_restarted_when_it_dies(test_config: Config) -> None:
    config = _config(test_config)
    server = BundledTriton(config.triton, config.daemon.state_dir, restart_delay_seconds=0.1)
    await server.start()
    try:
        first = server.pid
        assert first is not None
        os.kill(first, 9)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (server.restarts == 1 and server.pid and server.is_ready()):
            await _tick()
        assert server.restarts == 1 and server.pid not in (None, first) and server.is_ready()
    finally:
        await server.stop(deadline=time.monotonic() + 20)


def test_missing_model_repository_is_a_clear_error(test_config: Config, tmp_path: Path) -> None:
    import asyncio

    from daemon.inference.triton_server import TritonStartFailed

    settings = dataclasses.replace(test_config.triton, model_repository=tmp_path / "nowhere")
    with pytest.raises(TritonStartFailed, match="model repository not found"):
        asyncio.run(BundledTriton(settings, tmp_path).start())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


async def _tick() -> None:
    import asyncio

    await asyncio.sleep(0.2)


@pytest.mark.parametrize("cpu_priority", ["normal", "low", "idle"])
def test_child_setup_applies_the_cpu_priority(cpu_priority: str) -> None:
    probe = "import os; print(os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0))"
    output = subprocess.run([sys.executable, "-c", probe], preexec_fn=child_setup(cpu_priority), check=True,
                            capture_output=True, text=True).stdout.split()
    policy, nice = int(output[0]), int(output[1])
    own = os.getpriority(os.PRIO_PROCESS, 0)
    expected = {"normal": (os.SCHED_OTHER, own), "low": (os.SCHED_OTHER, min(19, own + 10)),
                "idle": (os.SCHED_IDLE, own)}
    assert (policy, nice) == expected[cpu_priority]
