"""A tritonserver serving the shipped model on fixed loopback ports, started once and restartable.

The daemons under test reach it through [triton] url, so a daemon restart does not restart Triton, and a
fault test can kill it (kill -9) and bring it back on the same ports while the daemon keeps running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from daemon.config import TritonConfig
from daemon.inference.triton_server import find_installation, prepare_backends, server_command, server_environment
from tests.conftest import REPO_ROOT

MODEL = "neurolabel_report"
REPOSITORY = REPO_ROOT / "triton_models"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TritonService:
    """One tritonserver process at a time on the same three ports; `kill()` and `start()` at will."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.installation = find_installation()
        work_dir.mkdir(parents=True, exist_ok=True)
        self.backends = prepare_backends(self.installation, work_dir)
        self.settings = TritonConfig(
            model_repository=REPOSITORY, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port()
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.settings.grpc_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 120.0) -> None:
        if self.running:
            return
        command = [
            *server_command(self.installation, self.backends, self.settings),
            "--model-control-mode=explicit",
            f"--load-model={MODEL}",
        ]
        deadline = time.monotonic() + timeout
        while True:
            log = open(self.work_dir / "tritonserver.log", "ab")
            with log:
                # Its own process group, so that a kill reaches the python backend stubs too.
                self.process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, env=server_environment(self.installation),
                    start_new_session=True, preexec_fn=_die_with_parent,
                )
            try:
                self._wait_ready(deadline)
                break
            except RuntimeError:
                # Ports of the killed server not released yet: try again until the deadline.
                if time.monotonic() > deadline:
                    raise
                self._reap()
                time.sleep(0.5)
        self.starts += 1

    def kill(self) -> None:
        """kill -9 the server and its stubs (what a crash or the OOM killer does)."""
        if self.process is not None:
            self._reap()
            self.kills += 1

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self._reap()

    def _reap(self) -> None:
        """SIGKILL to the server's process group, and wait for the server."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def _wait_ready(self, deadline: float) -> None:
        url = f"http://127.0.0.1:{self.settings.http_port}/v2/models/{MODEL}/ready"
        assert self.process is not None
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.process.returncode}; see {self.work_dir}")
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tritonserver not ready; see {self.work_dir}") from None
                time.sleep(0.1)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, however it dies (a timeout, kill -9)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_PR_SET_PDEATHSIG = 1
