"""The bundled Triton server: the `tritonserver` binary that the PyPI package nvidia-pytriton ships.

Used when `[triton] url` is empty: started on loopback over our model
repository, waited for until ready, restarted if it dies, stopped (never
orphaned) with the daemon. Its log goes to `<state_dir>/triton/tritonserver.log`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import logging
import os
import shutil
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from daemon.config import Config, TritonConfig

log = logging.getLogger("neurolabel.triton")

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
# [triton] cpu_priority = "low"
LOW_PRIORITY_NICE = 10


class TritonNotInstalled(Exception):
    """nvidia-pytriton (the `server` extra) is not installed."""


class TritonStartFailed(Exception):
    """The bundled server exited or did not become ready; the message points at its log."""


@dataclass(frozen=True)
class TritonInstallation:
    binary: Path
    python_backend: Path
    stub: Path
    libraries: Path


def find_installation() -> TritonInstallation:
    """Locate tritonserver, the python backend, the stub for this Python and the bundled shared libraries."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotInstalled(
            "the bundled Triton server needs the 'server' extra: pip install 'neurolabel[server]' "
            "(or set [triton] url to a running Triton)"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    root = package / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    installation = TritonInstallation(
        binary=root / "bin" / "tritonserver",
        python_backend=root / "backends" / "python",
        stub=root / "python_backend_stubs" / version / "triton_python_backend_stub",
        libraries=package.parent / "nvidia_pytriton.libs",
    )
    for path in (installation.binary, installation.python_backend, installation.stub, installation.libraries):
        if not path.exists():
            raise TritonNotInstalled(f"incomplete nvidia-pytriton installation: {path} is missing")
    return installation


def prepare_backends(installation: TritonInstallation, work_dir: Path) -> Path:
    """A writable backend folder holding the python backend with the stub for the running Python."""
    backends = work_dir / "backends"
    python_backend = backends / "python"
    if python_backend.exists():
        shutil.rmtree(python_backend)
    shutil.copytree(installation.python_backend, python_backend)
    stub = python_backend / "triton_python_backend_stub"
    shutil.copy2(installation.stub, stub)
    stub.chmod(0o755)
    return backends


def server_command(installation: TritonInstallation, backends: Path, settings: TritonConfig) -> list[str]:
    return [
        str(installation.binary),
        f"--model-repository={settings.model_repository.resolve()}",
        f"--backend-directory={backends}",
        f"--http-address={LOOPBACK}",
        f"--http-port={settings.http_port}",
        f"--grpc-address={LOOPBACK}",
        f"--grpc-port={settings.grpc_port}",
        f"--metrics-address={LOOPBACK}",
        f"--metrics-port={settings.metrics_port}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        "--exit-timeout-secs=10",
        "--log-verbose=0",
    ]


def server_environment(installation: TritonInstallation) -> dict[str, str]:
    """LD_LIBRARY_PATH for the bundled libraries; this Python's bin/ first on PATH so the stub finds our packages."""
    environment = dict(os.environ)
    library_path = [str(installation.libraries)]
    if environment.get("LD_LIBRARY_PATH"):
        library_path.append(environment["LD_LIBRARY_PATH"])
    environment["LD_LIBRARY_PATH"] = os.pathsep.join(library_path)
    environment["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), environment.get("PATH", "")])
    environment.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    return environment


def with_concrete_ports(config: Config) -> Config:
    """Replace bundled-server ports of 0 with free ports, so clients know where to connect."""
    settings = config.triton
    if settings.url or all((settings.http_port, settings.grpc_port, settings.metrics_port)):
        return config
    ports = {name: getattr(settings, name) or _free_port() for name in ("http_port", "grpc_port", "metrics_port")}
    return replace(config, triton=replace(settings, **ports))


def grpc_url(config: Config) -> str:
    """Where clients reach Triton's gRPC endpoint: the configured url, else the bundled server."""
    return config.triton.url or f"{LOOPBACK}:{config.triton.grpc_port}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM if the daemon dies, even by kill -9."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def child_setup(cpu_priority: str) -> Callable[[], None]:
    """What the server's process does before exec: die with the daemon, and take the CPU priority
    [triton] cpu_priority names ("idle": SCHED_IDLE, "low": nice 10, "normal": unchanged)."""

    def setup() -> None:
        _die_with_parent()
        with contextlib.suppress(OSError):  # refused (a seccomp filter): it runs as the daemon; see priority_applied
            if cpu_priority == "idle":
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            elif cpu_priority == "low":
                os.nice(LOW_PRIORITY_NICE)

    return setup


def priority_applied(pid: int, cpu_priority: str) -> bool:
    """Whether process `pid` runs at [triton] cpu_priority `cpu_priority` (False when it cannot be read)."""
    try:
        if cpu_priority == "idle":
            return os.sched_getscheduler(pid) == os.SCHED_IDLE
        if cpu_priority == "low":
            return os.getpriority(os.PRIO_PROCESS, pid) >= min(19, os.getpriority(os.PRIO_PROCESS, 0) + LOW_PRIORITY_NICE)
    except OSError:
        return False
    return True


class BundledTriton:
    """Supervises one tritonserver process."""

    def __init__(self, settings: TritonConfig, state_dir: Path, *, restart_delay_seconds: float = 2.0) -> None:
        self._settings = settings
        self._work_dir = state_dir / "triton"
        self._restart_delay = restart_delay_seconds
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0

    @property
    def log_path(self) -> Path:
        return self._work_dir / "tritonserver.log"

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self._settings.http_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.returncode is None else None

    async def start(self) -> None:
        """Start the server and wait until it reports ready; raise TritonStartFailed otherwise."""
        installation = find_installation()
        if not self._settings.model_repository.is_dir():
            raise TritonStartFailed(f"model repository not found: {self._settings.model_repository}")
        self._work_dir.mkdir(parents=True, exist_ok=True)
        backends = await asyncio.to_thread(prepare_backends, installation, self._work_dir)
        self._command = server_command(installation, backends, self._settings)
        self._environment = server_environment(installation)
        await self._launch()
        await self._wait_ready(self._settings.startup_timeout_seconds)
        self._supervisor = asyncio.create_task(self._supervise(), name="triton-supervisor")

    async def _launch(self) -> None:
        with self.log_path.open("ab") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                *self._command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=self._environment,
                preexec_fn=child_setup(self._settings.cpu_priority),
            )
        log.info("tritonserver started (pid %d, grpc port %d)", self._process.pid, self._settings.grpc_port)
        if not priority_applied(self._process.pid, self._settings.cpu_priority):
            log.warning("tritonserver runs at the daemon's CPU priority: [triton] cpu_priority = %r was refused",
                        self._settings.cpu_priority)

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.returncode is not None:
                code = self._process.returncode if self._process else None
                raise TritonStartFailed(f"tritonserver exited with code {code} while starting; see {self.log_path}")
            if await asyncio.to_thread(self._probe_ready):
                log.info("tritonserver ready")
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._process.wait(), timeout=0.25)
        await self._terminate(deadline=time.monotonic() + 5)
        raise TritonStartFailed(f"tritonserver not ready after {timeout:.0f} s; see {self.log_path}")

    def _probe_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=1) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def is_ready(self) -> bool:
        return self.pid is not None and self._probe_ready()

    async def _supervise(self) -> None:
        """Restart the server whenever it exits unexpectedly."""
        while not self._stopping:
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping:
                return
            self.restarts += 1
            log.error("tritonserver exited with code %s; restarting (restart %d)", code, self.restarts)
            await asyncio.sleep(self._restart_delay)
            try:
                await self._launch()
                await self._wait_ready(self._settings.startup_timeout_seconds)
            except TritonStartFailed as exc:
                log.error("tritonserver restart failed: %s", exc)

    async def stop(self, deadline: float) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._terminate(deadline)

    async def _terminate(self, deadline: float) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=max(0.5, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            log.warning("tritonserver did not stop in time; killing it")
            process.kill()
            await process.wait()
        log.info("tritonserver stopped (code %s)", process.returncode)


def run_bundled_server(config: Config) -> None:
    """`neurolabel triton`: serve until SIGTERM/SIGINT, then stop the server."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        shutdown = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, shutdown.set)
        server = BundledTriton(config.triton, config.daemon.state_dir)
        await server.start()
        log.info("serving %s on gRPC %s", config.triton.model_repository, grpc_url(config))
        await shutdown.wait()
        await server.stop(time.monotonic() + config.daemon.drain_seconds)

    asyncio.run(main())
