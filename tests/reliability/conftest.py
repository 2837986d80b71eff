"""Fixtures of the reliability tests: the short (CI) or long version, figures, Triton, daemons as processes.

`NEUROLABEL_LONG=1` selects the long version (bench/reliability_long.sh). `NEUROLABEL_FIGURES=DIR` makes
every test write its figures to DIR/<name>.json (the long script collects them for docs/reliability.md).
Every daemon a test starts is scanned at the end for patient names, ids and report text in its log, its
audit file and its audit table: after a full run, every log and audit file of the run has been scanned.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.daemon_process import DaemonProcess
from tests.reliability.load import personal_strings, write_json
from tests.reliability.privacy import audit_files, scan
from tests.reliability.triton_service import TritonService

LONG = os.environ.get("NEUROLABEL_LONG", "") not in ("", "0")


def scaled(short: Any, long: Any) -> Any:
    """The short version's value in CI, the long version's with NEUROLABEL_LONG=1."""
    return long if LONG else short


class Figures:
    """Figures of one test, written as JSON where NEUROLABEL_FIGURES points (and kept on the object)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.values: dict[str, Any] = {"version": "long" if LONG else "short"}

    def record(self, **values: Any) -> None:
        self.values.update(values)
        folder = os.environ.get("NEUROLABEL_FIGURES")
        if folder:
            write_json(Path(folder) / f"{self.name}.json", self.values)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    return Figures(request.node.name.removeprefix("test_"))


@pytest.fixture(scope="session")
def triton_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonService]:
    """One tritonserver with the shipped model for the whole session (restartable on its ports)."""
    from tests.work.test_daemon_labelling import triton_missing

    missing = triton_missing()
    if missing:
        pytest.skip(missing)
    service = TritonService(tmp_path_factory.mktemp("triton"))
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def triton(triton_service: TritonService) -> TritonService:
    """The session's Triton, running (a test before may have killed it)."""
    triton_service.start()
    return triton_service


DaemonFactory = Callable[..., DaemonProcess]


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[DaemonFactory]:
    """`daemon_factory(name, triton_url="", extra={...})` makes a DaemonProcess (not started); each is stopped
    at the end and its log and audit files scanned for personal data."""
    made: list[DaemonProcess] = []

    def make(name: str = "daemon", triton_url: str = "", extra: dict[str, dict[str, Any]] | None = None,
             **kwargs: Any) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path / name, triton_url=triton_url, extra=extra or {}, **kwargs)
        made.append(daemon)
        return daemon

    yield make
    needles = personal_strings()
    problems = []
    for daemon in made:
        try:
            code = daemon.stop()
            if daemon.kills == 0 and daemon.starts and code != 0:
                problems.append(f"{daemon.root.name} exited with {code}")
            result = scan([daemon.log_path, *audit_files(daemon.state)], needles,
                          daemon.database if daemon.starts else None)
            PRIVACY_SCANS.append(result)
            problems += [f"personal data in {hit}" for hit in result.hits[:20]]
            problems += [f"{daemon.log_path}: {problem}" for problem in unexpected_tracebacks(daemon.log_text())]
        finally:
            daemon.close()
    assert not problems, "\n".join(problems)


PRIVACY_SCANS: list[Any] = []
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ +\w+ +([\w.]+):")


def unexpected_tracebacks(log: str) -> list[str]:
    """A thread that died, or a traceback logged by neurolabel itself; pynetdicom logs its own handled
    exceptions with a traceback, which is allowed."""
    problems = []
    logger = ""
    for line in log.splitlines():
        match = _LOG_LINE.match(line)
        if match:
            logger = match.group(1)
        elif line.startswith("Exception in thread"):
            problems.append(line)
        elif line.startswith("Traceback") and not logger.startswith("pynetdicom"):
            problems.append(f"traceback after a {logger or 'start'} log line")
    return problems


def pytest_sessionfinish(session: pytest.Session) -> None:
    folder = os.environ.get("NEUROLABEL_FIGURES")
    if folder and PRIVACY_SCANS:
        write_json(Path(folder) / "privacy_scan.json", {
            "daemons": len(PRIVACY_SCANS),
            "files": sum(s.files for s in PRIVACY_SCANS),
            "bytes": sum(s.bytes for s in PRIVACY_SCANS),
            "audit_rows": sum(s.audit_rows for s in PRIVACY_SCANS),
            "hits": sum(len(s.hits) for s in PRIVACY_SCANS),
        })
