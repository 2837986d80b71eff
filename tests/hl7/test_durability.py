"""Every acknowledged message survives a kill -9 of the daemon right after its ACK."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from daemon.store.database import open_database
from daemon.store.schema import hl7_messages, reports
from tests.hl7.messages import oru
from tests.hl7.wire import MllpClient, msa

NEUROLABEL = Path(sys.executable).with_name("neurolabel")
LISTENING = re.compile(rb"hl7 listener on [^:]+:(\d+)")


def _config(tmp_path: Path) -> Path:
    var = tmp_path / "var"
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "{var}"
drain_seconds = 2.0
[hl7]
enabled = true
port = 0
[dicom]
enabled = false
[triton]
enabled = false
[metrics]
enabled = false
[database]
url = "sqlite:///{var / 'neurolabel.db'}"
[storage]
path = "{var / 'dicom'}"
[audit]
report_dir = "{var / 'audit-reports'}"
log_file = "{var / 'audit' / 'audit.jsonl'}"
"""
    )
    return path


async def _start(config: Path) -> tuple[asyncio.subprocess.Process, int]:
    process = await asyncio.create_subprocess_exec(
        str(NEUROLABEL),
        "run",
        "--config",
        str(config),
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert process.stderr is not None
    seen = b""
    while True:
        line = await asyncio.wait_for(process.stderr.readline(), timeout=120)
        seen += line
        if not line:
            raise AssertionError(f"daemon exited before listening:\n{seen.decode(errors='replace')}")
        match = LISTENING.search(line)
        if match:
            # Keep draining stderr so the daemon never blocks on a full pipe.
            asyncio.get_running_loop().create_task(_drain(process.stderr))
            return process, int(match.group(1))


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


@pytest.mark.slow
async def test_acknowledged_messages_survive_kill_9(tmp_path: Path) -> None:
    config = _config(tmp_path)
    process, port = await _start(config)
    acknowledged: list[str] = []
    killed = asyncio.Event()

    async def sender(number: int) -> None:
        client = await MllpClient.connect(port)
        try:
            for i in range(10_000):
                control_id = f"K{number}-{i}"
                try:
                    ack = await client.exchange(oru(control_id, accession=control_id), timeout=30)
                except (ConnectionError, asyncio.IncompleteReadError):
                    return
                assert msa(ack)[:2] == ["AA", control_id]
                acknowledged.append(control_id)
                if len(acknowledged) == 300 and not killed.is_set():
                    os.kill(process.pid, signal.SIGKILL)  # right after this ACK, no grace
                    killed.set()
                if killed.is_set():
                    return
        finally:
            await client.close()

    await asyncio.wait_for(asyncio.gather(*(sender(n) for n in range(4))), timeout=300)
    assert await process.wait() == -signal.SIGKILL
    assert len(acknowledged) >= 300

    database = open_database(f"sqlite:///{tmp_path / 'var' / 'neurolabel.db'}")
    try:
        with database.connect() as connection:
            stored = set(
                connection.execute(
                    sa.select(hl7_messages.c.control_id).where(hl7_messages.c.status == "accepted")
                ).scalars()
            )
            with_report = set(connection.execute(sa.select(reports.c.accession_number)).scalars())
    finally:
        database.dispose()
    missing = [control_id for control_id in acknowledged if control_id not in stored or control_id not in with_report]
    assert missing == []

    # After a restart, a resend of an acknowledged message is re-acknowledged, not stored twice.
    process, port = await _start(config)
    try:
        client = await MllpClient.connect(port)
        try:
            ack = await client.exchange(oru(acknowledged[0], accession=acknowledged[0]))
            assert msa(ack)[:2] == ["AA", acknowledged[0]]
        finally:
            await client.close()
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=60) == 0
    database = open_database(f"sqlite:///{tmp_path / 'var' / 'neurolabel.db'}")
    try:
        with database.connect() as connection:
            statuses = list(
                connection.execute(
                    sa.select(hl7_messages.c.status).where(hl7_messages.c.control_id == acknowledged[0])
                ).scalars()
            )
    finally:
        database.dispose()
    assert sorted(statuses) == ["accepted", "duplicate"]
