"""Triton servers for tests: the bundled tritonserver binary with any extra options (TLS, restricted APIs),
on free loopback ports, and a throwaway CA with server and client certificates (openssl).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.config import TritonConfig
from daemon.inference.triton_server import (
    TritonNotInstalled,
    find_installation,
    prepare_backends,
    server_command,
    server_environment,
)

FIXTURE_REPOSITORY = Path(__file__).resolve().parent.parent / "fixtures" / "triton_models"


@dataclass(frozen=True)
class TritonPeer:
    grpc_url: str
    http_port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def require_tritonserver() -> None:
    try:
        find_installation()
    except TritonNotInstalled as exc:
        pytest.skip(f"tritonserver binary not available: {exc}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_triton(
    work_dir: Path,
    repository: Path = FIXTURE_REPOSITORY,
    extra_args: Sequence[str] = (),
    *,
    models: Sequence[str] = ("fake_report",),
    timeout: float = 90.0,
) -> Iterator[TritonPeer]:
    """A tritonserver serving `models` of `repository`, ready when entered, stopped on exit."""
    installation = find_installation()
    work_dir.mkdir(parents=True, exist_ok=True)
    backends = prepare_backends(installation, work_dir)
    settings = TritonConfig(
        model_repository=repository, http_port=_free_port(), grpc_port=_free_port(), metrics_port=_free_port()
    )
    command = [
        *server_command(installation, backends, settings),
        "--model-control-mode=explicit",
        *(f"--load-model={model}" for model in models),
        *extra_args,
    ]
    log_path = work_dir / "tritonserver.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=server_environment(installation))
    peer = TritonPeer(f"127.0.0.1:{settings.grpc_port}", settings.http_port, log_path, process)
    try:
        _wait_ready(peer, models, timeout)
        yield peer
    finally:
        peer.stop()


def _wait_ready(peer: TritonPeer, models: Sequence[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    urls = [f"http://127.0.0.1:{peer.http_port}/v2/models/{model}/ready" for model in models]
    while True:
        if peer.process.poll() is not None:
            raise RuntimeError(f"tritonserver exited ({peer.process.returncode}): {_tail(peer.log_path)}")
        try:
            for url in urls:
                with urllib.request.urlopen(url, timeout=2):
                    pass
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"tritonserver not ready after {timeout} s: {_tail(peer.log_path)}") from None
            time.sleep(0.1)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(folder: Path) -> Certificates:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by the CA."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=folder, check=True, capture_output=True)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=neurolabel test CA")
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        (folder / f"{name}.ext").write_text(extension + "\n")
        run("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=neurolabel test {name}")
        run(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        )
    return Certificates(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )
