"""Hostile HL7 over MLLP against `neurolabel run` as a process: every message is answered with an error
ACK (or, for bytes that are no message, dropped and audited), promptly, without the daemon's memory
jumping, and a well-formed message still gets AA afterwards.
"""

from __future__ import annotations

import socket
import time

import pytest
import sqlalchemy as sa

from daemon.hl7.framing import frame
from daemon.store.schema import audit_events
from tests.reliability.conftest import DaemonFactory, Figures
from tests.reliability.load import Cases, ack_code, read_frame

pytestmark = pytest.mark.slow

RSS_GROWTH_LIMIT = 150 * 1024 * 1024
PROMPT_SECONDS = 10.0


def hostile_messages() -> dict[str, tuple[bytes, set[str]]]:
    base = Cases("WIRE").next().hl7()
    head, _, rest = base.partition(b"\rOBX|1|")
    return {
        "escape expanding to gigabytes": (
            base.replace(b"|TX|GDT^Report^L||", b"|TX|GDT^Report^L||\\.sp9999999999\\", 1), {"AA"}),
        "2 MB message (over max_message_bytes)": (base + b"OBX|9|TX|||" + b"x" * (2 << 20) + b"\r", {"AR"}),
        "20,000 segments": (base + b"NTE|1||note\r" * 20000, {"AA", "AE", "AR"}),
        "a field repeated 50,000 times": (base.replace(b"PID|1||", b"PID|1||" + b"X~" * 50000, 1), {"AA", "AE", "AR"}),
        "MSH only": (b"MSH|^~\\&|RIS|HOSPITAL|||20240101||ORU^R01|M1|P|2.5\r", {"AE", "AR"}),
        "invalid UTF-8 with UTF-8 declared": (
            head + b"\rOBX|1|" + rest.replace(b"|", b"|\xff\xfe", 3), {"AA", "AE", "AR"}),
        "NUL bytes everywhere": (base.replace(b"|", b"|\x00"), {"AA", "AE", "AR"}),
        "a batch (FHS/BHS) in one frame": (b"FHS|^~\\&\rBHS|^~\\&\r" + base, {"AR"}),
        "not HL7 at all": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", {"AR"}),
    }


def exchange(port: int, data: bytes) -> tuple[str, float]:
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROMPT_SECONDS * 3) as connection:
            connection.sendall(data)
            return ack_code(read_frame(connection)), time.monotonic() - started
    except (EOFError, OSError) as exc:
        return f"no answer ({type(exc).__name__})", time.monotonic() - started


def test_hostile_hl7_is_answered_and_harmless(daemon_factory: DaemonFactory, figures: Figures) -> None:
    daemon = daemon_factory("hl7-wire", extra={"dicom": {"enabled": False}})
    daemon.start()
    baseline = daemon.rss_bytes()
    answers: dict[str, str] = {}
    problems = []
    for name, (payload, expected) in hostile_messages().items():
        answer, seconds = exchange(daemon.hl7_port, frame(payload))
        answers[name] = answer
        if answer not in expected:
            problems.append(f"{name}: {answer}, expected {sorted(expected)}")
        if seconds > PROMPT_SECONDS:
            problems.append(f"{name}: answered after {seconds:.1f} s")
        if daemon.rss_bytes() - baseline > RSS_GROWTH_LIMIT:
            problems.append(f"{name}: resident memory {daemon.rss_bytes() >> 20} MB")
        assert daemon.alive, f"daemon died on {name!r}:\n{daemon.log_text()[-3000:]}"
    # Bytes that never make a frame: 5 MB of junk, then a frame that never ends, then the connection drops.
    with socket.create_connection(("127.0.0.1", daemon.hl7_port), timeout=30) as connection:
        for _ in range(5):
            connection.sendall(b"junk" * (1 << 18))
        connection.sendall(b"\x0bMSH|^~\\&|RIS|HOSPITAL|||2024||ORU^R01|CUT|P|2.5\rOBX|1|TX|||cut")
    answers["5 MB of junk, then a frame cut by a disconnect"] = "dropped"
    time.sleep(1.0)
    answer, _ = exchange(daemon.hl7_port, frame(Cases("WIREOK").next().hl7()))
    assert answer == "AA"
    with daemon.reading() as connection:
        framing = connection.execute(
            sa.select(sa.func.count()).select_from(audit_events).where(audit_events.c.kind == "hl7.framing")
        ).scalar()
    assert framing >= 2, "discarded bytes are audited"
    assert not problems, "\n".join(problems)
    figures.record(cases=len(answers), answers=answers,
                   rss_growth_mb=round((daemon.rss_bytes() - baseline) / 2**20, 1))
