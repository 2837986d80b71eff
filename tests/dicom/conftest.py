"""Fixtures for the DICOM intake: DCMTK's tools as real peers, the listener started in-process on port 0."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from daemon.app import Daemon, start_daemon, stop_daemon
from daemon.config import Config
from daemon.dicom.scp import DicomListener, build_dicom_listener
from tests.conftest import make_test_config

# Debian's DCMTK lives in /usr/bin; the virtualenv has pynetdicom's own storescu/echoscu scripts, which are not it.
DCMTK_DIRS = ("/usr/bin", "/usr/local/bin")
# Without TCP_NODELAY DCMTK's tools wait for Nagle's algorithm on loopback (~40 ms per object).
DCMTK_ENV = {"TCP_NODELAY": "1"}


@dataclass(frozen=True)
class Dcmtk:
    storescu: Path
    echoscu: Path
    storescp: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, **DCMTK_ENV}


def find_dcmtk() -> Dcmtk | None:
    """DCMTK's storescu, echoscu and storescp (Debian package dcmtk), or None."""
    found: dict[str, Path] = {}
    for tool in ("storescu", "echoscu", "storescp"):
        for folder in DCMTK_DIRS:
            candidate = Path(folder) / tool
            if candidate.exists() and _is_dcmtk(candidate):
                found[tool] = candidate
                break
        else:
            return None
    return Dcmtk(**found)


def _is_dcmtk(path: Path) -> bool:
    try:
        result = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10)
    except OSError:
        return False
    return "dcmtk" in (result.stdout + result.stderr).lower()


@pytest.fixture(scope="session")
def dcmtk() -> Dcmtk:
    tools = find_dcmtk()
    if tools is None:
        pytest.skip("DCMTK (Debian package dcmtk) is not installed")
    return tools


@dataclass(frozen=True)
class ToolResult:
    returncode: int
    output: str


async def run_tool(dcmtk: Dcmtk, tool: str, args: Sequence[str], timeout: float = 60.0) -> ToolResult:
    """Run a DCMTK tool without blocking the event loop (the daemon under test runs on it)."""
    process = await asyncio.create_subprocess_exec(
        str(getattr(dcmtk, tool)), *args, env=dcmtk.env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout)
    return ToolResult(process.returncode or 0, output.decode(errors="replace"))


def dicom_config(tmp_path: Path, extra_toml: str = "") -> Config:
    """The test config with the DICOM listener enabled; `extra_toml` may have its own [dicom] table."""
    if "[dicom]\n" in extra_toml:
        return make_test_config(tmp_path, extra_toml.replace("[dicom]\n", "[dicom]\nenabled = true\n", 1))
    return make_test_config(tmp_path, "[dicom]\nenabled = true\n" + extra_toml)


@pytest.fixture
def intake_config(tmp_path: Path) -> Config:
    return dicom_config(tmp_path)


@pytest.fixture
async def listener(intake_config: Config) -> AsyncIterator[DicomListener]:
    """The DICOM listener alone (no inference, no workers), on a free port."""
    daemon = await start_listener(intake_config)
    try:
        yield daemon.component("dicom")  # type: ignore[misc]
    finally:
        await stop_daemon(daemon, drain_seconds=5)


async def start_listener(config: Config) -> Daemon:
    return await start_daemon(config, factories=[build_dicom_listener])


def pydicom_file(name: str) -> Path:
    return Path(str(get_testdata_file(name)))


def copy_pydicom_file(names: Sequence[str], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(pydicom_file(name), folder / name)) for name in names]
