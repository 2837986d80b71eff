"""`neurolabel run` as a real process on fixed free ports: started, killed with SIGKILL and started again.

Each start appends to one log file; the ports stay the same across restarts so the load generators
reconnect where they were. `ready` is the daemon's own "neurolabel ready" log line (after every listener
is up), so a restart is waited on without probing the listeners (a probe would be audited).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from daemon.config import Config, load_config
from daemon.store.database import Database, open_database
from tests.conftest import REPO_ROOT
from tests.reliability.triton_service import free_port

READY_LINE = "neurolabel ready"


def config_text(state: Path, ports: dict[str, int], triton_url: str, extra: dict[str, dict[str, Any]]) -> str:
    """The TOML of a daemon under test: state under `state`, loopback ports, remote Triton (or none)."""
    sections: dict[str, dict[str, Any]] = {
        "daemon": {"state_dir": str(state), "drain_seconds": 5.0, "instance_name": "reliability"},
        "hl7": {"enabled": True, "port": ports["hl7"]},
        "dicom": {"enabled": True, "port": ports["dicom"], "stable_after_seconds": 1.0},
        "storage": {"path": str(state / "dicom"), "min_free_bytes": 0},
        "database": {"url": f"sqlite:///{state / 'neurolabel.db'}"},
        "triton": {"enabled": bool(triton_url), "url": triton_url, "request_timeout_seconds": 10.0},
        "workers": {"retry_base_seconds": 0.2, "retry_max_seconds": 2.0, "max_attempts": 50},
        "linking": {"recheck_interval_seconds": 2.0},
        "metrics": {"port": ports["metrics"]},
        "audit": {"report_dir": str(state / "audit-reports"), "log_file": str(state / "audit" / "audit.jsonl")},
    }
    for name, values in extra.items():
        target = sections.setdefault(name.split(".")[0], {})
        for part in name.split(".")[1:]:
            target = target.setdefault(part, {})
        target.update(values)
    return _dump(sections)


def _dump(tables: dict[str, Any], prefix: str = "") -> str:
    scalars = [f"{key} = {json.dumps(value)}" for key, value in tables.items() if not isinstance(value, dict)]
    text = "\n".join(scalars) + ("\n" if scalars else "")
    for key, value in tables.items():
        if isinstance(value, dict):
            text += f"[{prefix}{key}]\n" + _dump(value, prefix=f"{prefix}{key}.")
    return text


@dataclass
class DaemonProcess:
    """One daemon's state folder, config and process; `start`, `kill`, `stop` as often as the test likes."""

    root: Path
    triton_url: str = ""
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=lambda: {name: free_port() for name in ("hl7", "dicom", "metrics")})
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: int = 0
    start_seconds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.state = self.root / "var"
        self.config_path = self.root / "config.toml"
        self.log_path = self.root / "daemon.log"
        self.config_path.write_text(config_text(self.state, self.ports, self.triton_url, self.extra))
        self._database: Database | None = None

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    @property
    def hl7_port(self) -> int:
        return self.ports["hl7"]

    @property
    def dicom_port(self) -> int:
        return self.ports["dicom"]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 90.0) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        started = time.monotonic()
        environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        with open(self.log_path, "ab") as log:
            log.write(f"=== start {self.starts + 1} ===\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "--config", str(self.config_path), "run"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.root, env=environment,
            )
        deadline = started + timeout
        while READY_LINE not in self._log_since(offset):
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self._log_since(offset)[-4000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"daemon not ready after {timeout} s:\n{self._log_since(offset)[-4000:]}")
            time.sleep(0.05)
        self.starts += 1
        self.start_seconds.append(time.monotonic() - started)

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup, exactly what a power cut does to the process."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.kills += 1

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the drain; returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"daemon did not stop within {timeout} s of SIGTERM") from None
        return int(self.process.returncode)

    def rss_bytes(self) -> int:
        """Resident memory of the daemon process (not its children)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")

    # --- the database, read by the test (the daemon may be down) ---

    @property
    def database(self) -> Database:
        if self._database is None:
            self._database = open_database(self.config.database.url)
        return self._database

    @contextmanager
    def reading(self) -> Any:
        with self.database.connect() as connection:
            yield connection

    def scalar(self, statement: sa.Executable) -> Any:
        with self.reading() as connection:
            return connection.execute(statement).scalar()

    def close(self) -> None:
        try:
            if self.alive:
                self.stop()
        finally:
            if self._database is not None:
                self._database.dispose()
                self._database = None
