"""HL7 messages/s and ACK latency through neurolabel's MLLP listener: full parse, durable commit, then ACK.

    python bench/hl7_intake.py [--messages 2000] [--connections 8] [--rate 100] [--seconds 20] [--json out.json]

The listener runs as its own process (`--serve`: the HL7 component of `neurolabel run` alone, with its
default event loop (uvloop when installed), on SQLite with WAL and synchronous=FULL, logging at INFO to a
file) and is fed from this process over loopback by MLLP senders that behave like interface engines: each
connection, a thread with a blocking socket (TCP_NODELAY), sends a message, waits for its ACK, then sends the
next. The frames are built before the clock starts, as an engine has its outbound queue ready, so the
senders cost little CPU (reported as "senders CPU / msg") on the cores the listener also needs. Every ACK
is checked to be AA for the message sent, and after each scenario every acknowledged control id is checked
to be in the database. Scenarios, each on a fresh database:

- one persistent connection, as fast as ACKs come back;
- `--connections` connections at once, each as fast as its ACKs come back;
- `--rate` messages/s spread over 4 connections for `--seconds`, for the ACK latency percentiles.

Messages are ORU^R01 v2.5.1 with a ~1.2 kB report in 8 OBX lines and unique accessions, so each one creates a
report, a classify job and an audit row. A short probe of write+fsync on the database's folder is reported
for context: the commit of each batch costs one such fsync.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

VT, FS, CR = b"\x0b", b"\x1c", b"\r"
FINDINGS = [
    "There is no restricted diffusion to suggest acute infarction.",
    "Scattered foci of T2/FLAIR hyperintensity in the periventricular white matter.",
    "The ventricles and sulci are within normal limits for age.",
    "No intracranial haemorrhage, mass or midline shift.",
    "Normal flow voids in the major intracranial arteries.",
    "Mild mucosal thickening of the left maxillary sinus.",
    "The pituitary gland and posterior fossa structures are unremarkable.",
    "Impression: chronic small vessel ischaemic change, otherwise normal.",
]


@dataclass(frozen=True)
class Result:
    scenario: str
    connections: int
    messages: int
    seconds: float
    rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    all_aa: bool
    all_stored: bool
    # The listener process's CPU time per message (user + system): what the rate would be on one idle core.
    listener_cpu_ms: float = 0.0
    # This process's (the senders') CPU time per message, spent on the same cores.
    sender_cpu_ms: float = 0.0


def message(control_id: str) -> bytes:
    lines = random.sample(FINDINGS, len(FINDINGS))
    segments = [
        f"MSH|^~\\&|RIS|BENCHHOSP|NEUROLABEL|NEURO|20240305143000||ORU^R01^ORU_R01|{control_id}|P|2.5.1",
        f"PID|1||MRN{control_id}^^^BENCHHOSP^MR~NHS{control_id}^^^NHS^NH||BENCH^PATIENT||19600101|F",
        "PV1|1|O|MRI^^^BENCHHOSP",
        f"ORC|RE|PL{control_id}|{control_id}",
        f"OBR|1|PL{control_id}|{control_id}|MRHEAD^MRI head^L|||20240305120000|||||||||||||||20240305142500||MR|F",
        *(f"OBX|{i}|TX|GDT^Report^L||{line}||||||F" for i, line in enumerate(lines, 1)),
    ]
    return ("\r".join(segments) + "\r").encode()


# --- the listener process ------------------------------------------------------------


def serve(state: Path, event_loop: str) -> None:
    """Run the HL7 listener alone, the way `neurolabel run` starts it; print its port; stop on SIGTERM."""
    from daemon.app import run_until_signalled
    from daemon.config import parse_config
    from daemon.hl7.listener import build_hl7_listener
    from daemon.ops.logs import configure_logging

    config = parse_config(
        f"""
[daemon]
state_dir = "{state}"
event_loop = "{event_loop}"
[hl7]
port = 0
[database]
url = "sqlite:///{state / 'neurolabel.db'}"
"""
    )
    configure_logging("INFO", "text")
    import logging

    class PortAnnouncer(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            match = re.search(r"hl7 listener on [^:]+:(\d+)", record.getMessage())
            if match:
                print(match.group(1), flush=True)

    logging.getLogger("neurolabel.hl7").addHandler(PortAnnouncer())
    run_until_signalled(config, factories=[build_hl7_listener])


class Listener:
    def __init__(self, folder: Path, event_loop: str = "auto") -> None:
        self.folder = folder
        self.log = open(folder / "listener.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(folder), "--event-loop", event_loop],
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.process.kill()
            self.log.close()
            tail = (folder / "listener.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"listener did not start:\n{tail}")
        self.port = int(line)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)
        self.log.close()

    def stored_control_ids(self) -> set[str]:
        import sqlite3

        with sqlite3.connect(self.folder / "neurolabel.db") as connection:
            rows = connection.execute("SELECT control_id FROM hl7_messages WHERE status = 'accepted'").fetchall()
        return {row[0] for row in rows}


# --- senders -----------------------------------------------------------------------------


def sender(
    port: int, frames: list[tuple[str, bytes]], latencies: list[float], acked: list[str], pace: float | None, start: float
) -> bool:
    """One connection: send a frame, read its ACK, check it is AA for that control id; then the next."""
    all_aa = True
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = b""
        for index, (control_id, payload) in enumerate(frames):
            if pace is not None:
                delay = start + index * pace - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            sent = time.perf_counter()
            connection.sendall(payload)
            while (end := pending.find(FS + CR)) < 0:
                data = connection.recv(65536)
                if not data:
                    raise ConnectionError(f"listener closed the connection after {index} ACKs")
                pending += data
            ack, pending = pending[:end], pending[end + 2 :]
            latencies.append(time.perf_counter() - sent)
            if _acknowledges(ack, control_id):
                acked.append(control_id)
            else:
                all_aa = False
    return all_aa


def _acknowledges(ack: bytes, control_id: str) -> bool:
    """Whether the ACK's MSA says AA for this control id."""
    for segment in ack.split(CR):
        fields = segment.lstrip(VT).split(b"|")
        if fields[0] == b"MSA":
            return len(fields) > 2 and fields[1] == b"AA" and fields[2] == control_id.encode()
    return False


def run_scenario(name: str, port: int, connections: int, total: int, rate: float | None) -> tuple[Result, list[str]]:
    per_connection = total // connections
    frames = [
        [(cid, VT + message(cid) + FS + CR) for cid in (f"{name[:3]}{c}x{i}" for i in range(per_connection))]
        for c in range(connections)
    ]
    latencies: list[float] = []
    acked: list[str] = []
    outcomes: list[bool] = []
    pace = connections / rate if rate else None
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()

    def run(c: int) -> None:
        outcomes.append(sender(port, frames[c], latencies, acked, pace, start + c / (rate or 1)))

    threads = [threading.Thread(target=run, args=(c,)) for c in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    sender_cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    latencies.sort()

    def percentile(fraction: float) -> float:
        return latencies[min(len(latencies) - 1, int(fraction * len(latencies)))] * 1000

    result = Result(
        scenario=name,
        connections=connections,
        messages=len(latencies),
        seconds=round(elapsed, 2),
        rate=round(len(latencies) / elapsed, 1),
        p50_ms=round(percentile(0.50), 2),
        p95_ms=round(percentile(0.95), 2),
        p99_ms=round(percentile(0.99), 2),
        max_ms=round(latencies[-1] * 1000, 2),
        all_aa=len(outcomes) == connections and all(outcomes),
        all_stored=False,
        sender_cpu_ms=round(sender_cpu * 1000 / max(1, len(latencies)), 3),
    )
    return result, acked


def fsync_probe(folder: Path, rounds: int = 50) -> float:
    """Median milliseconds of a 4 kB write + fsync in `folder` (what one durable commit costs at least)."""
    path = folder / "fsync-probe"
    timings = []
    with open(path, "wb") as handle:
        for _ in range(rounds):
            started = time.perf_counter()
            handle.write(b"x" * 4096)
            handle.flush()
            os.fsync(handle.fileno())
            timings.append((time.perf_counter() - started) * 1000)
    path.unlink()
    return round(statistics.median(timings), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=2000, help="messages per throughput scenario")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rate", type=float, default=100.0, help="messages/s of the latency scenario")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the latency scenario")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--folder",
        type=Path,
        help="where the databases go (default: the system's temporary folder); its disk's "
        "fsync latency bounds the one-connection rate",
    )
    parser.add_argument(
        "--event-loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="the listener's [daemon] event_loop (default auto: uvloop when installed)",
    )
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.event_loop)
        return
    scenarios = [
        ("one connection", 1, args.messages, None),
        (f"{args.connections} connections", args.connections, args.messages, None),
        (f"{args.rate:g} msg/s paced", 4, int(args.rate * args.seconds), args.rate),
    ]
    results = []
    with tempfile.TemporaryDirectory(prefix="hl7bench-", dir=args.folder) as root:
        probe = fsync_probe(Path(root))
        for name, connections, total, rate in scenarios:
            folder = Path(root) / name.replace(" ", "-").replace("/", "")
            folder.mkdir()
            listener = Listener(folder, args.event_loop)
            try:
                cpu_before = listener.cpu_seconds()
                result, acked = run_scenario(name, listener.port, connections, total, rate)
                cpu_ms = (listener.cpu_seconds() - cpu_before) * 1000 / max(1, result.messages)
                stored = listener.stored_control_ids()
            finally:
                listener.stop()
            result = Result(
                **{
                    **asdict(result),
                    "all_stored": set(acked) <= stored and len(acked) == result.messages,
                    "listener_cpu_ms": round(cpu_ms, 3),
                }
            )
            results.append(result)
            print(
                f"{name:>22}: {result.rate:8.1f} msg/s  ACK latency p50 {result.p50_ms:6.2f} ms  "
                f"p95 {result.p95_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms  max {result.max_ms:7.2f} ms  "
                f"listener CPU {result.listener_cpu_ms:.2f} ms/msg  senders CPU {result.sender_cpu_ms:.2f} ms/msg  "
                f"({result.messages} messages, all AA: {result.all_aa}, all stored: {result.all_stored})",
                flush=True,
            )
    print(
        f"event loop: {args.event_loop}; fsync probe (4 kB write + fsync, median): {probe} ms; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "results": [asdict(r) for r in results],
                    "fsync_ms": probe,
                    "event_loop": args.event_loop,
                    "cpus": os.cpu_count(),
                    "load_average": os.getloadavg()[0],
                    "python": platform.python_version(),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
