"""The real daemon on port 0: python-hl7's mllp_send as an independent sender, and raw sockets for the hard cases."""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from daemon.app import Daemon, start_daemon, stop_daemon
from daemon.hl7.framing import frame
from daemon.hl7.listener import Hl7Listener
from daemon.store.schema import audit_events, hl7_messages, jobs, reports
from tests.conftest import make_test_config
from tests.hl7.messages import oru
from tests.hl7.wire import MllpClient, eventually, msa

MLLP_SEND = Path(sys.executable).with_name("mllp_send")

DaemonFactory = Callable[..., Any]


@pytest.fixture
async def hl7_daemon(tmp_path: Path) -> AsyncIterator[DaemonFactory]:
    """Start the daemon with the HL7 listener enabled (extra [hl7] settings as TOML lines); stopped afterwards."""
    started: list[Daemon] = []

    async def start(extra: str = "") -> tuple[Daemon, int]:
        config = make_test_config(tmp_path, "[hl7]\nenabled = true\n" + extra)
        daemon = await start_daemon(config)
        started.append(daemon)
        listener = daemon.component("hl7")
        assert isinstance(listener, Hl7Listener)
        return daemon, listener.port

    yield start
    for daemon in started:
        await stop_daemon(daemon, drain_seconds=5)


def _count(daemon: Daemon, table: sa.Table, *where: Any) -> int:
    with daemon.services.database.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())


def _audits(daemon: Daemon, kind: str) -> list[Any]:
    with daemon.services.database.connect() as connection:
        return list(connection.execute(sa.select(audit_events).where(audit_events.c.kind == kind)))


async def test_mllp_send_from_python_hl7(hl7_daemon: DaemonFactory, tmp_path: Path) -> None:
    daemon, port = await hl7_daemon()
    messages = [oru(f"PY{i}", accession=f"PYACC{i}") for i in range(3)]
    framed = tmp_path / "framed.hl7"
    framed.write_bytes(b"".join(frame(m.encode()) for m in messages))
    loose = tmp_path / "loose.hl7"
    loose.write_text("\n\n".join(oru(f"LOOSE{i}", accession=f"LACC{i}", separator="\n") for i in range(2)))

    def send(*arguments: str) -> str:
        result = subprocess.run(
            [str(MLLP_SEND), "-p", str(port), *arguments, "127.0.0.1"], capture_output=True, timeout=60, check=True
        )
        return result.stdout.decode("latin-1")

    output = await asyncio.to_thread(send, "--file", str(framed))
    acks = [line for line in output.split("\n") if "MSA" in line or "MSH" in line]
    assert [msa(chunk)[:2] for chunk in output.split("\x1c") if "MSA" in chunk] == [["AA", f"PY{i}"] for i in range(3)]
    assert acks
    output = await asyncio.to_thread(send, "--loose", "--file", str(loose))
    assert [msa(chunk)[:2] for chunk in output.split("\x1c") if "MSA" in chunk] == [
        ["AA", f"LOOSE{i}"] for i in range(2)
    ]
    assert _count(daemon, reports) == 5
    assert _count(daemon, jobs, jobs.c.kind == "classify") == 5


async def test_ack_comes_after_commit_on_a_persistent_connection(hl7_daemon: DaemonFactory) -> None:
    daemon, port = await hl7_daemon()
    client = await MllpClient.connect(port)
    try:
        for i in range(20):
            ack = await client.exchange(oru(f"SEQ{i}", accession=f"SEQ{i}"))
            assert msa(ack)[:2] == ["AA", f"SEQ{i}"]
            # Read through another connection right after the ACK: it is already committed.
            assert _count(daemon, hl7_messages, hl7_messages.c.control_id == f"SEQ{i}") == 1
    finally:
        await client.close()


async def test_framing_errors_do_not_cost_the_connection(hl7_daemon: DaemonFactory) -> None:
    daemon, port = await hl7_daemon()
    client = await MllpClient.connect(port)
    try:
        client.writer.write(b"random garbage\r\n" + b"\x0bMSH|^~\\&|half a message")
        await client.send(oru("AFTER1"))
        assert msa(await client.read_ack())[:2] == ["AA", "AFTER1"]
        # No <VT>, no <CR> after <FS>: still one message.
        client.writer.write(oru("NOVT").encode() + b"\x1c")
        assert msa(await client.read_ack())[:2] == ["AA", "NOVT"]
        assert msa(await client.exchange(b"this is not HL7"))[0] == "AR"
    finally:
        await client.close()
    await eventually(lambda: len(_audits(daemon, "hl7.framing")) >= 2, what="framing audit rows")
    reasons = " ".join(a.detail for a in _audits(daemon, "hl7.framing"))
    assert "outside a frame" in reasons and "restarted" in reasons


async def test_oversize_message_is_answered_ar_and_kept(hl7_daemon: DaemonFactory) -> None:
    daemon, port = await hl7_daemon("max_message_bytes = 2000\n")
    client = await MllpClient.connect(port)
    try:
        huge = oru("BIG1", lines=["x" * 100] * 200)
        ack = await client.exchange(huge)
        assert msa(ack)[:2] == ["AR", "BIG1"] and "exceeds the maximum" in ack
        assert msa(await client.exchange(oru("SMALL1")))[:2] == ["AA", "SMALL1"]
    finally:
        await client.close()
    with daemon.services.database.connect() as connection:
        row = connection.execute(sa.select(hl7_messages).where(hl7_messages.c.control_id == "BIG1")).one()
    assert row.status == "rejected" and len(row.raw) == 2000 and row.size_bytes == len(huge)


async def test_slow_sender(hl7_daemon: DaemonFactory) -> None:
    _daemon, port = await hl7_daemon("idle_timeout_seconds = 5.0\n")
    client = await MllpClient.connect(port)
    try:
        data = frame(oru("SLOW1").encode())
        for start in range(0, len(data), 9):
            client.writer.write(data[start : start + 9])
            await client.writer.drain()
            await asyncio.sleep(0.005)  # the sender's own pace
        assert msa(await client.read_ack())[:2] == ["AA", "SLOW1"]
    finally:
        await client.close()


async def test_disconnect_mid_message_stores_nothing(hl7_daemon: DaemonFactory) -> None:
    daemon, port = await hl7_daemon()
    client = await MllpClient.connect(port)
    client.writer.write(frame(oru("CUT1").encode())[:150])
    await client.writer.drain()
    await client.close()
    await eventually(lambda: len(_audits(daemon, "hl7.framing")) == 1, what="mid-message audit row")
    assert "mid-message" in _audits(daemon, "hl7.framing")[0].detail
    assert _count(daemon, hl7_messages) == 0


async def test_idle_connection_is_closed(hl7_daemon: DaemonFactory) -> None:
    daemon, port = await hl7_daemon("idle_timeout_seconds = 0.3\n")
    client = await MllpClient.connect(port)
    client.writer.write(frame(oru("IDLE1").encode())[:100])  # stalls mid-message
    await client.writer.drain()
    assert await client.closed_by_peer(timeout=10)
    await client.close()
    await eventually(lambda: len(_audits(daemon, "hl7.framing")) == 1, what="stalled message audit row")
    assert _count(daemon, hl7_messages) == 0


async def test_twenty_concurrent_connections(hl7_daemon: DaemonFactory) -> None:
    daemon, port = await hl7_daemon()

    async def sender(number: int) -> list[list[str]]:
        client = await MllpClient.connect(port)
        try:
            return [
                msa(await client.exchange(oru(f"C{number}-{i}", accession=f"C{number}-{i}")))[:2] for i in range(10)
            ]
        finally:
            await client.close()

    results = await asyncio.gather(*(sender(n) for n in range(20)))
    assert all(result == [["AA", f"C{n}-{i}"] for i in range(10)] for n, result in enumerate(results))
    assert _count(daemon, reports) == 200
    listener = daemon.component("hl7")
    assert isinstance(listener, Hl7Listener)
    committer = listener._committer  # noqa: SLF001 - group commit is what this test is about
    assert committer is not None and committer.messages == 200 and committer.batches < 200


async def test_enhanced_mode_sends_commit_then_application_ack(hl7_daemon: DaemonFactory) -> None:
    _daemon, port = await hl7_daemon()
    client = await MllpClient.connect(port)
    try:
        await client.send(oru("ENH1", ack_modes=("AL", "AL")))
        assert msa(await client.read_ack())[:2] == ["CA", "ENH1"]
        assert msa(await client.read_ack())[:2] == ["AA", "ENH1"]
        # A commit ACK sent back for our application ACK is not answered: the next reply is for ENH2.
        await client.send(
            "MSH|^~\\&|RIS|HOSPITAL|NEUROLABEL|NEURO|20240305143000||ACK^R01^ACK|K1|P|2.5.1\rMSA|CA|NL1\r"
        )
        assert msa(await client.exchange(oru("ENH2", ack_modes=("ER", "ER"), status="Q")))[:2] == ["AE", "ENH2"]
        assert msa(await client.exchange(oru("ENH3", ack_modes=("AL", "NE"))))[:2] == ["CA", "ENH3"]
    finally:
        await client.close()


async def test_peer_outside_allowed_networks_is_refused(hl7_daemon: DaemonFactory) -> None:
    daemon, port = await hl7_daemon('allowed_networks = ["10.0.0.0/8"]\n')
    client = await MllpClient.connect(port)
    await client.send(oru("NET1"))
    assert await client.closed_by_peer()
    await client.close()
    await eventually(lambda: len(_audits(daemon, "hl7.connection")) == 1, what="refused connection audit row")
    assert _count(daemon, hl7_messages) == 0


async def test_sender_allowlist_over_the_wire(hl7_daemon: DaemonFactory) -> None:
    _daemon, port = await hl7_daemon('allowed_senders = ["RIS^HOSPITAL"]\n')
    client = await MllpClient.connect(port)
    try:
        assert msa(await client.exchange(oru("SND1")))[0] == "AA"
        assert msa(await client.exchange(oru("SND2", sending="EVIL|HOSPITAL")))[0] == "AR"
    finally:
        await client.close()


async def test_tls_with_client_certificates(hl7_daemon: DaemonFactory, tmp_path: Path) -> None:
    pki = _make_pki(tmp_path / "pki")
    _daemon, port = await hl7_daemon(
        f'[hl7.tls]\ncert = "{pki["server.pem"]}"\nkey = "{pki["server.key"]}"\nca = "{pki["ca.pem"]}"\n'
        "require_client_cert = true\n"
    )
    context = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    context.load_cert_chain(str(pki["client.pem"]), str(pki["client.key"]))
    client = await MllpClient.connect(port, context)
    try:
        assert msa(await client.exchange(oru("TLS1")))[:2] == ["AA", "TLS1"]
    finally:
        await client.close()
    anonymous = ssl.create_default_context(cafile=str(pki["ca.pem"]))
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        client = await MllpClient.connect(port, anonymous)
        await client.exchange(oru("TLS2"), timeout=10)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError, asyncio.TimeoutError)):
        plain = await MllpClient.connect(port)
        await plain.exchange(oru("PLAIN1"), timeout=5)


async def test_metrics_and_health(hl7_daemon: DaemonFactory) -> None:
    daemon, port = await hl7_daemon()
    client = await MllpClient.connect(port)
    try:
        await client.exchange(oru("MET1"))
    finally:
        await client.close()
    health = daemon.health()["hl7"]
    assert health.up and f"port {port}" in health.detail
    from prometheus_client import generate_latest

    metrics = generate_latest(daemon.services.registry).decode()
    assert 'neurolabel_hl7_messages_total{outcome="accepted"} 1.0' in metrics
    assert "neurolabel_hl7_ack_seconds_count 1.0" in metrics


def _make_pki(folder: Path) -> dict[str, Path]:
    """A throwaway CA with a server certificate for 127.0.0.1/localhost and a client certificate (openssl)."""
    folder.mkdir(parents=True)

    def openssl(*arguments: str) -> None:
        subprocess.run(["openssl", *arguments], cwd=folder, check=True, capture_output=True, timeout=60)

    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=neurolabel test CA"
    )
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl("req", *curve, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        extra = ["-extfile", "server.ext"] if name == "server" else []
        openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", *extra,
        )  # fmt: skip
    return {name: folder / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


async def _log_an_accepted_and_a_rejected_message(
    hl7_daemon: DaemonFactory, caplog: pytest.LogCaptureFixture, level: str
) -> list[logging.LogRecord]:
    """Send LOG1 (accepted) and LOG2 (result status Q: AE 103), both with report text "SECRET ..."; the
    listener's log records at `level`."""
    caplog.set_level(level, logger="neurolabel")
    _daemon, port = await hl7_daemon()
    client = await MllpClient.connect(port)
    try:
        await client.exchange(oru("LOG1", accession="LOGACC", lines=("SECRET FINDING",)))
        await client.exchange(oru("LOG2", accession="LOGACC2", status="Q", lines=("SECRET OTHER",)))
    finally:
        await client.close()
    assert "SECRET" not in caplog.text and "MRN12345" not in caplog.text and "DOE" not in caplog.text
    return [r for r in caplog.records if r.name == "neurolabel.hl7"]


async def test_log_line_carries_ids_and_timing_not_content(
    hl7_daemon: DaemonFactory, caplog: pytest.LogCaptureFixture
) -> None:
    records = await _log_an_accepted_and_a_rejected_message(hl7_daemon, caplog, "DEBUG")
    lines = [r.getMessage() for r in records]
    assert any("MSH-10=LOG1" in line and "accession=LOGACC" in line and " ms " in line for line in lines)
    assert any("MSH-10=LOG2" in line and "103" in line for line in lines)


async def test_info_logs_one_line_per_batch_and_each_problem(
    hl7_daemon: DaemonFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """At INFO an accepted message is one count in its batch's line (its own line is DEBUG: a write per message
    cost ~15 % of the event loop's CPU); a message with a problem keeps its WARNING line."""
    records = await _log_an_accepted_and_a_rejected_message(hl7_daemon, caplog, "INFO")
    batches = [r.getMessage() for r in records if r.getMessage().startswith("hl7 batch of ")]
    assert any(line.startswith("hl7 batch of 1 committed in ") and line.endswith(": 1 accepted") for line in batches)
    assert any(line.endswith(": 1 rejected") for line in batches)
    assert not any("MSH-10=LOG1" in r.getMessage() for r in records)
    assert any("MSH-10=LOG2" in r.getMessage() and r.levelname == "WARNING" for r in records)


async def test_pipelined_messages_are_committed_together_and_acknowledged_in_order(
    hl7_daemon: DaemonFactory,
) -> None:
    daemon, port = await hl7_daemon()
    client = await MllpClient.connect(port)
    try:
        client.writer.write(b"".join(frame(oru(f"PIPE{i}", accession=f"PIPE{i}").encode()) for i in range(50)))
        await client.writer.drain()
        assert [msa(await client.read_ack())[:2] for _ in range(50)] == [["AA", f"PIPE{i}"] for i in range(50)]
    finally:
        await client.close()
    listener = daemon.component("hl7")
    assert isinstance(listener, Hl7Listener)
    committer = listener._committer  # noqa: SLF001 - group commit is what this test is about
    assert committer is not None and committer.messages == 50 and committer.batches < 50
    assert _count(daemon, reports) == 50
