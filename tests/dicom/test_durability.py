"""kill -9 at any moment: every instance that got a success status is on disk, complete, and in the index.

The listener runs as its own process; DCMTK's storescu sends a folder of
instances and reports, per file, the status it got. The listener is killed
with SIGKILL after a varying number of successes (or at once, or mid-stream
by time); then the index and the files are checked against what the sender
was told, and a restarted listener takes the whole folder again.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
from pydicom import dcmread

from daemon.config import Config
from tests.conftest import REPO_ROOT
from tests.dicom.conftest import DCMTK_ENV, Dcmtk, dicom_config, run_tool
from tests.dicom.datasets import mr_dataset, new_uid, save

pytestmark = pytest.mark.slow

INSTANCES = 120
LISTENING = re.compile(r"DICOM listener \S+ on [\d.]+:(\d+)")


def write_config(tmp_path: Path) -> Path:
    config = dicom_config(tmp_path)
    path = tmp_path / "listener.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{config.daemon.state_dir}"\nlog_level = "INFO"\n'
        f'[dicom]\nport = 0\nstable_after_seconds = 0.5\n'
        f'[storage]\npath = "{config.storage.path}"\nmin_free_bytes = 0\n'
        f'[database]\nurl = "{config.database.url}"\n'
        f'[metrics]\nenabled = false\n[hl7]\nenabled = false\n'
    )
    return path


class Listener:
    """The listener process; `port` once it logged that it listens."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, log: list[str]) -> None:
        self.process = process
        self.port = port
        self.log = log

    @classmethod
    async def start(cls, config_path: Path) -> Listener:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.dicom.listener_process", str(config_path), cwd=REPO_ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        log: list[str] = []
        assert process.stderr is not None
        async with asyncio.timeout(60):
            while True:
                line = (await process.stderr.readline()).decode(errors="replace")
                if not line:
                    raise AssertionError("listener exited:\n" + "".join(log))
                log.append(line)
                match = LISTENING.search(line)
                if match:
                    break
        listener = cls(process, int(match.group(1)), log)
        asyncio.ensure_future(listener._drain())
        return listener

    async def _drain(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.log.append(line.decode(errors="replace"))

    async def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await self.process.wait()


async def send_until_killed(dcmtk: Dcmtk, listener: Listener, folder: Path, kill_after: int | None,
                            kill_after_seconds: float | None) -> set[str]:
    """storescu the folder; SIGKILL the listener after `kill_after` successes (or seconds). Files that got success."""
    process = await asyncio.create_subprocess_exec(
        str(dcmtk.storescu), "-v", "+sd", "-aec", "NEUROLABEL", "127.0.0.1", str(listener.port), str(folder),
        env={**os.environ, **DCMTK_ENV}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    succeeded: set[str] = set()
    sending: str | None = None
    killer = None
    if kill_after_seconds is not None:
        killer = asyncio.get_running_loop().call_later(kill_after_seconds,
                                                       lambda: asyncio.ensure_future(listener.kill()))
    async with asyncio.timeout(120):
        while line := (await process.stdout.readline()).decode(errors="replace"):
            if line.startswith("I: Sending file: "):
                sending = line.removeprefix("I: Sending file: ").strip()
            elif "Received Store Response (Success)" in line and sending is not None:
                succeeded.add(sending)
                if kill_after is not None and len(succeeded) == kill_after:
                    await listener.kill()
        await process.wait()
    if killer is not None:
        killer.cancel()
    if listener.process.returncode is None:
        await listener.kill()
    return succeeded


def check_index(config: Config, folder: Path, succeeded: set[str]) -> None:
    """Every file that got success is indexed and stored complete; every indexed file exists."""
    database = Path(config.database.url.removeprefix("sqlite:///"))
    with sqlite3.connect(database) as connection:
        rows = {uid: (path, size) for uid, path, size in
                connection.execute("SELECT sop_instance_uid, path, size_bytes FROM instances")}
    for sent in succeeded:
        original = dcmread(sent)
        assert original.SOPInstanceUID in rows, f"{Path(sent).name} got success but is not in the index"
        path, size = rows[original.SOPInstanceUID]
        stored = config.storage.path / path
        assert stored.stat().st_size == size
        copy = dcmread(stored)
        assert copy.SOPInstanceUID == original.SOPInstanceUID
        assert copy.PixelData == original.PixelData
    for path, size in rows.values():
        assert (config.storage.path / path).stat().st_size == size


@pytest.mark.parametrize(("kill_after", "kill_after_seconds"), [(1, None), (37, None), (None, 0.0), (None, 0.8)])
async def test_kill_9_loses_no_acknowledged_instance(
    dcmtk: Dcmtk, tmp_path: Path, kill_after: int | None, kill_after_seconds: float | None
) -> None:
    folder = tmp_path / "send"
    study = new_uid()
    for number in range(INSTANCES):
        save(mr_dataset(study, instance_number=number, pixels=128), folder / f"{number:04d}.dcm")
    config_path = write_config(tmp_path)
    config = dicom_config(tmp_path)

    listener = await Listener.start(config_path)
    succeeded = await send_until_killed(dcmtk, listener, folder, kill_after, kill_after_seconds)
    if kill_after is not None:
        assert len(succeeded) >= kill_after
    check_index(config, folder, succeeded)

    # A new run recovers: leftovers cleaned, the sender's retry of the whole folder is taken.
    listener = await Listener.start(config_path)
    try:
        result = await run_tool(dcmtk, "storescu", ["+sd", "-aec", "NEUROLABEL", "127.0.0.1", str(listener.port),
                                                    str(folder)], timeout=120)
        assert result.returncode == 0, result.output[-2000:]
        check_index(config, folder, {str(path) for path in folder.iterdir()})
        assert list((config.storage.path / ".incoming").iterdir()) == []
        with sqlite3.connect(Path(config.database.url.removeprefix("sqlite:///"))) as connection:
            assert connection.execute("SELECT instance_count FROM studies").fetchall() == [(INSTANCES,)]
    finally:
        await listener.stop()
    assert not any("Traceback" in line for line in listener.log), "".join(listener.log)
