"""A throwaway Orthanc (Debian package `orthanc`) as the destination PACS: loopback HTTP, free ports, stopped after.

`orthanc_server` (session) starts one server with its storage in a temp folder; `orthanc` (function) gives each
test that server emptied of every study. The REST helpers wrap what the tests assert with: `/tools/find`,
`/instances/{id}/tags?short`, `/instances/{id}/file`. Without the Orthanc binary the tests that need it are
skipped with the reason.

Orthanc 1.10 has no option to bind its DICOM port to one address: it listens on every interface, on a random
high port, for the length of the test session (HTTP is loopback-only through RemoteAccessAllowed false).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from daemon.dicom.private_tags import PRIVATE_CREATOR, VRS

BINARY_CANDIDATES = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")
AE_TITLE = "ORTHANC"
START_TIMEOUT_SECONDS = 30.0
# Keyword names for the NEUROLABEL block, so implicit VR files show their values too.
_KEYWORDS = {
    0x01: "NeurolabelTagMapVersion",
    0x02: "NeurolabelLabelKeys",
    0x03: "NeurolabelLabelBits",
    0x04: "NeurolabelProbabilities",
    0x05: "NeurolabelModelName",
    0x06: "NeurolabelModelVersion",
    0x07: "NeurolabelAccessionNumber",
    0x08: "NeurolabelLabelledAt",
    0x09: "NeurolabelLabelStatus",
}


@dataclass(frozen=True)
class OrthancServer:
    http_port: int
    dicom_port: int
    folder: Path
    aet: str = AE_TITLE

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def address(self) -> str:
        """As [writeback] forward_to wants it: AE@host:port."""
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base_url + path, timeout=30) as response:
            return json.loads(response.read())

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(self.base_url + path, timeout=30) as response:
            return bytes(response.read())

    def post(self, path: str, body: Any) -> Any:
        request = urllib.request.Request(
            self.base_url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def delete(self, path: str) -> None:
        request = urllib.request.Request(self.base_url + path, method="DELETE")
        with urllib.request.urlopen(request, timeout=30):
            pass

    def find(self, level: str = "Instance", **query: str) -> list[str]:
        """Orthanc ids of the resources matching a DICOM query, e.g. find(StudyInstanceUID=uid)."""
        return list(self.post("/tools/find", {"Level": level, "Query": query}))

    def instance_tags(self, orthanc_id: str) -> dict[str, Any]:
        """{"gggg,eeee": value} of one stored instance (private tags included)."""
        return dict(self.get(f"/instances/{orthanc_id}/tags?short"))

    def instance_file(self, orthanc_id: str) -> bytes:
        return self.get_bytes(f"/instances/{orthanc_id}/file")

    def clear(self) -> None:
        for study in self.get("/studies"):
            self.delete(f"/studies/{study}")


def find_binary() -> str | None:
    for candidate in BINARY_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("Orthanc")


def orthanc_dictionary() -> dict[str, list[object]]:
    """Orthanc's "Dictionary" entries for the NEUROLABEL block (element offsets; the creator finds the block)."""
    entries: dict[str, list[object]] = {}
    for offset, vr in VRS.items():
        multiple = 0 if offset in (0x02, 0x03, 0x04) else 1
        entries[f"0011,{offset:02x}"] = [vr, _KEYWORDS[offset], 1, multiple, PRIVATE_CREATOR]
    return entries


@contextmanager
def run_orthanc(folder: Path) -> Iterator[OrthancServer]:
    """Start Orthanc with its state under `folder`; stop it on exit."""
    binary = find_binary()
    if binary is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    last_error = ""
    for _attempt in range(3):  # a free port found here may be taken before Orthanc binds it
        http_port, dicom_port = _free_port(), _free_port()
        server = OrthancServer(http_port=http_port, dicom_port=dicom_port, folder=folder)
        config_path = folder / "orthanc.json"
        config_path.write_text(json.dumps(_config(server), indent=2))
        log_path = folder / "orthanc.log"
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                [binary, str(config_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # DCMTK (inside Orthanc) leaves Nagle's algorithm on unless told: ~40 ms per object on loopback.
                env={**os.environ, "TCP_NODELAY": "1"},
            )
        try:
            if _wait_ready(server, process):
                try:
                    yield server
                finally:
                    _stop(process)
                return
        except BaseException:
            _stop(process)
            raise
        _stop(process)
        last_error = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"Orthanc did not start; its log ends with:\n{last_error}")


def _config(server: OrthancServer) -> dict[str, Any]:
    return {
        "Name": "neurolabel-test",
        "StorageDirectory": str(server.folder / "storage"),
        "IndexDirectory": str(server.folder / "index"),
        "HttpPort": server.http_port,
        "DicomPort": server.dicom_port,
        "DicomAet": server.aet,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowStore": True,
        "DicomCheckCalledAet": True,
        "Plugins": [],
        # A relabelled study is sent again with the same SOP Instance UIDs; keep the newer copy.
        "OverwriteInstances": True,
        "SaveJobs": False,
        "HttpThreadsCount": 4,
        "DicomThreadsCount": 2,
        "Dictionary": orthanc_dictionary(),
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(server: OrthancServer, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            server.get("/system")
            return _dicom_port_open(server)
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.05)
    return False


def _dicom_port_open(server: OrthancServer) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", server.dicom_port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


@pytest.fixture(scope="session")
def orthanc_server() -> Iterator[OrthancServer]:
    with tempfile.TemporaryDirectory(prefix="orthanc-") as folder, run_orthanc(Path(folder)) as server:
        yield server


@pytest.fixture
def orthanc(orthanc_server: OrthancServer) -> Iterator[OrthancServer]:
    """The session's Orthanc, empty at the start of the test."""
    orthanc_server.clear()
    yield orthanc_server
