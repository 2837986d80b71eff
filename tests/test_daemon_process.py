"""`neurolabel run` as a real process: status reports every component up; SIGTERM ends it and its children."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.inference.triton_server import TritonNotInstalled, find_installation

FIXTURE_REPOSITORY = Path(__file__).resolve().parent / "fixtures" / "triton_models"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            child = int(status.parent.name)
            found |= {child} | _children(child)
    return found


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    try:
        return "zombie" not in status.read_text()
    except OSError:
        return False


@pytest.mark.triton
def test_run_reports_ready_and_sigterm_stops_everything(tmp_path: Path) -> None:
    try:
        find_installation()
    except TritonNotInstalled:
        pytest.skip("nvidia-pytriton not installed")
    metrics_port = _free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[daemon]
state_dir = "{tmp_path / 'var'}"
drain_seconds = 15.0
[hl7]
port = {_free_port()}
[dicom]
port = {_free_port()}
[storage]
path = "{tmp_path / 'var' / 'dicom'}"
min_free_bytes = 0
[database]
url = "sqlite:///{tmp_path / 'var' / 'neurolabel.db'}"
[triton]
model = "text_length"
model_repository = "{FIXTURE_REPOSITORY}"
http_port = {_free_port()}
grpc_port = {_free_port()}
metrics_port = {_free_port()}
[metrics]
port = {metrics_port}
[audit]
report_dir = "{tmp_path / 'var' / 'audit-reports'}"
log_file = "{tmp_path / 'var' / 'audit' / 'audit.jsonl'}"
"""
    )
    command = [sys.executable, "-m", "daemon.cli", "--config", str(config)]
    daemon = subprocess.Popen([*command, "run"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        status: dict = {}
        while time.monotonic() < deadline:
            probe = subprocess.run([*command, "status", "--json"], capture_output=True, text=True, timeout=30)
            status = json.loads(probe.stdout)
            if probe.returncode == 0:
                break
            assert daemon.poll() is None, daemon.stdout.read() if daemon.stdout else ""
        assert status.get("ready") is True, status
        assert status["components"]["triton"]["up"] is True
        children = _children(daemon.pid)
        assert children, "the bundled tritonserver should be a child of the daemon"

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        assert not [pid for pid in children if _alive(pid)]
        output = daemon.stdout.read() if daemon.stdout else ""
        assert "Traceback" not in output
        down = subprocess.run([*command, "status"], capture_output=True, text=True, timeout=30)
        assert down.returncode == 1 and "not reachable" in down.stdout
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
