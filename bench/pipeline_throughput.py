"""The labelling pipeline end to end: reports/s from HL7 receipt to labels written back, and the latency from
report receipt to its SR stored in a destination PACS.

    python bench/pipeline_throughput.py [--reports 5000] [--latency-reports 300] [--rate 10] [--json out.json]
                                        [--triton-cpus N]

`neurolabel run` runs as its own process (HL7, DICOM, bundled Triton with the shipped model, workers,
write-back into the stored files: private tags and SR; SQLite, logging at INFO to a file), fed from this
process over loopback:

1. throughput: `--reports` single-instance MR studies are stored first (DCMTK storescu, one association)
   and left to become stable; then one report per study (ORU^R01, texts from the synthetic generator, a
   seed other than the training corpus's) is sent over `--connections` MLLP connections, each sending
   its next message once the ACK of the last is back. The rate is reports / (last write-back finished -
   first message received), both from the database; the times at which the last prediction, the last
   labels row and the last write-back were committed show which stage is the slowest. For comparison the
   classifier's own rate is measured on the same Triton just before and just after (TritonClassifier, the
   worker's request size and concurrency, 1,000 of the same texts); `pipeline_vs_classifier` is the
   pipeline's rate over the mean of the two, `steady_vs_classifier` the same for the rate between the 10th
   and the 90th percentile of the write-backs' finishing times (without the run's start and tail). Pinned,
   `cpu_busy_while_labelling` gives the share of its CPUs each side kept busy: the one near 1 is the
   bottleneck.
2. latency: a fresh daemon forwarding to Orthanc (Debian package `orthanc`); `--latency-reports` studies
   stored, then their reports sent at `--rate` per second; latency = the forward job's completion (Orthanc
   answered the C-STORE of the SR with success) - the message's receipt. Orthanc is asked afterwards how
   many SRs it holds.

`--triton-cpus N` pins the bundled Triton (tritonserver and its Python-backend stubs, every thread) to the
last N CPUs and the daemon and this process to the others, once the daemon is ready: both the classifier
alone and the pipeline then run on that pinned Triton (at `[triton] cpu_priority = "normal"`: its CPUs are
its own; unpinned it runs at the shipped "idle"). It models a deployment in which the classifier has
a device of its own (a GPU) and asks whether any other stage is then the bottleneck; without it (the
default) Triton and the daemon share every CPU, and on a machine where the classifier alone fills them
every other stage's CPU comes out of the classifier's.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import pydicom  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from daemon.store.database import Database, open_database  # noqa: E402
from daemon.store.schema import hl7_messages, jobs, predictions, reports, study_labels, writebacks  # noqa: E402
from daemon.training.generator import generate_corpus  # noqa: E402

BENCH_SEED = 4242
VT, FS, CR = b"\x0b", b"\x1c", b"\r"
STORESCU = "/usr/bin/storescu"  # DCMTK's (the virtualenv's storescu is pynetdicom's)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def oru(control_id: str, accession: str, patient_id: str, text: str) -> bytes:
    now = dt.datetime.now().strftime("%Y%m%d%H%M%S")
    lines = [line.replace("|", "/") for line in text.split("\n") if line.strip()] or ["(empty)"]
    segments = [
        f"MSH|^~\\&|RIS|HOSPITAL|NEUROLABEL|NEURO|{now}||ORU^R01^ORU_R01|{control_id}|P|2.5.1",
        f"PID|1||{patient_id}^^^HOSP^MR||BENCH^PATIENT||19700101|F",
        "PV1|1|O",
        f"ORC|RE|{accession}|{accession}",
        f"OBR|1|{accession}|{accession}|MRHEAD^MRI head^L|||{now}|||||||||||||||{now}||MR|F",
        *(f"OBX|{i}|TX|GDT^Report^L||{line}||||||F" for i, line in enumerate(lines, 1)),
    ]
    return VT + "\r".join(segments).encode() + CR + FS + CR


def write_studies(folder: Path, count: int, prefix: str) -> list[tuple[str, str, str]]:
    """`count` one-instance MR studies from pydicom's MR_small; returns (study uid, accession, patient id)."""
    folder.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    today = dt.date.today().strftime("%Y%m%d")
    studies = []
    for n in range(count):
        uid, accession, patient = generate_uid(), f"{prefix}{n:05d}", f"P{prefix}{n:05d}"
        dataset = template.copy()
        dataset.StudyInstanceUID = uid
        dataset.SeriesInstanceUID = generate_uid()
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.AccessionNumber = accession
        dataset.PatientID = patient
        dataset.StudyDate = today
        dataset.save_as(folder / f"{n:05d}.dcm", enforce_file_format=True)
        studies.append((uid, accession, patient))
    return studies


class Daemon:
    """`neurolabel run` as a child process with its own state folder and free ports."""

    def __init__(self, state: Path, forward_to: Sequence[str] = (), *, triton_priority: str = "idle") -> None:
        self.state = state
        self.hl7_port, self.dicom_port = free_port(), free_port()
        self.http_port, self.grpc_port = free_port(), free_port()
        self.database_url = f"sqlite:///{state / 'neurolabel.db'}"
        config = f"""
[daemon]
state_dir = "{state}"
drain_seconds = 10.0
[hl7]
port = {self.hl7_port}
[dicom]
port = {self.dicom_port}
stable_after_seconds = 2.0
[storage]
path = "{state / 'dicom'}"
min_free_bytes = 0
[database]
url = "{self.database_url}"
[triton]
model_repository = "{REPO_ROOT / 'triton_models'}"
http_port = {free_port()}
grpc_port = {self.grpc_port}
metrics_port = {free_port()}
cpu_priority = "{triton_priority}"
[writeback]
forward_to = {json.dumps(list(forward_to))}
[metrics]
port = {self.http_port}
[audit]
report_dir = "{state / 'audit-reports'}"
log_file = "{state / 'audit' / 'audit.jsonl'}"
"""
        state.mkdir(parents=True, exist_ok=True)
        self.config_path = state / "config.toml"
        self.config_path.write_text(config)
        self.log = (state / "daemon.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run", "--config", str(self.config_path)],
            cwd=REPO_ROOT, stdout=self.log, stderr=subprocess.STDOUT,
        )
        self.database: Database | None = None

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.process.returncode}; see {self.state / 'daemon.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=2) as response:
                    # /readyz speaks for the components started so far: the listeners start last.
                    if response.status == 200 and _accepts(self.hl7_port) and _accepts(self.dicom_port):
                        self.database = open_database(self.database_url)
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"daemon not ready after {timeout:.0f} s; see {self.state / 'daemon.log'}")

    def pin(self, triton_cpus: int) -> dict[str, Any]:
        """Triton's processes (every thread) to the last `triton_cpus` CPUs, the daemon's and this process's
        threads to the others (threads started later inherit their creator's CPUs)."""
        available = sorted(os.sched_getaffinity(0))
        if not 0 < triton_cpus < len(available):
            raise SystemExit(f"--triton-cpus must leave the daemon a CPU: 1 to {len(available) - 1} of {available}")
        triton, rest = set(available[-triton_cpus:]), set(available[:-triton_cpus])
        children = _children(self.process.pid)
        names = sorted({_comm(pid) for pid in children})
        if not any(name.startswith("tritonserver") for name in names):
            raise RuntimeError(f"no tritonserver among the daemon's child processes ({names})")
        threads = sum(_pin_threads(pid, triton) for pid in children)
        _pin_threads(self.process.pid, rest)
        _pin_threads(os.getpid(), rest)
        return {"triton_cpus": sorted(triton), "daemon_cpus": sorted(rest), "triton_processes": names,
                "triton_threads_pinned": threads}

    def cpu_split(self) -> tuple[float, float, float]:
        """(the daemon's own process, of it in the kernel, its children: Triton and its model stubs) CPU seconds
        so far."""
        return (_cpu_of([self.process.pid]), _cpu_of([self.process.pid], user=False),
                _cpu_of(_children(self.process.pid)))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        if self.database is not None:
            self.database.dispose()


def _cpu_of(pids: Sequence[int], *, user: bool = True) -> float:
    """CPU seconds of `pids`: user and system time, or (user=False) system time only."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += ((int(fields[11]) if user else 0) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            continue
    return total


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def _pin_threads(pid: int, cpus: set[int]) -> int:
    """Every thread of `pid` to `cpus` (sched_setaffinity on a process id sets only its main thread's)."""
    pinned = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
            pinned += 1
        except (ProcessLookupError, FileNotFoundError):
            continue  # the thread ended meanwhile
    return pinned


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    result = [int(child) for child in found]
    for child in list(result):
        result += _children(child)
    return result


def count(database: Database, query: sa.Select[Any]) -> int:
    with database.connect() as connection:
        return int(connection.execute(query).scalar() or 0)


def done_jobs(kind: str) -> sa.Select[Any]:
    return sa.select(sa.func.count()).select_from(jobs).where(jobs.c.kind == kind, jobs.c.state == "done")


def wait_until(what: str, condition: Any, timeout: float, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def store_studies(daemon: Daemon, folder: Path, expected: int) -> float:
    """storescu the folder over one association; wait until every study's study_stable job is done."""
    started = time.perf_counter()
    env = {**os.environ, "TCP_NODELAY": "1"}
    subprocess.run([STORESCU, "-aec", "NEUROLABEL", "+sd", "+r", "127.0.0.1", str(daemon.dicom_port), str(folder)],
                   check=True, env=env, capture_output=True)
    assert daemon.database is not None
    stable_done = done_jobs("study_stable")
    wait_until("studies stable", lambda: count(daemon.database, stable_done) >= expected, timeout=1800)
    return time.perf_counter() - started


async def classifier_rate(daemon: Daemon, texts: Sequence[str]) -> dict[str, float]:
    """The classifier alone on the daemon's Triton, as the worker calls it (64 reports a call, 16 per request)."""
    from daemon.inference.triton_client import TritonClassifier

    url = f"127.0.0.1:{daemon.grpc_port}"
    async with TritonClassifier(url, "neurolabel_report", timeout_seconds=600) as classifier:
        await classifier.classify(list(texts[:32]))
        started = time.perf_counter()
        batches = [list(texts[i : i + 64]) for i in range(0, len(texts), 64)]
        semaphore = asyncio.Semaphore(4)  # [workers] concurrency

        async def one(batch: list[str]) -> None:
            async with semaphore:
                await classifier.classify(batch)

        await asyncio.gather(*(one(batch) for batch in batches))
        seconds = time.perf_counter() - started
    return {"reports": len(texts), "seconds": round(seconds, 1), "reports_per_s": round(len(texts) / seconds, 1)}


async def send_reports(port: int, messages: Sequence[bytes], connections: int, rate: float | None) -> list[float]:
    """Send every message, each connection waiting for its ACK; paced to `rate`/s when given. ACK latencies (s)."""
    pending = list(enumerate(messages))
    latencies: list[float] = []
    start = time.monotonic()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while pending:
                index, message = pending.pop(0)
                if rate:
                    await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
                sent = time.monotonic()
                writer.write(message)
                await writer.drain()
                ack = await reader.readuntil(FS + CR)
                if b"MSA|AA" not in ack:
                    raise RuntimeError(f"not accepted: {ack[:200]!r}")
                latencies.append(time.monotonic() - sent)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return latencies


def steady_rate(database: Database) -> float:
    """Write-backs a second between the 10th and the 90th percentile of their finishing times: the sustained
    rate, without the run's start (until the first batch is classified) and its tail (the last write-backs)."""
    with database.connect() as connection:
        query = sa.select(writebacks.c.finished_at).order_by(writebacks.c.finished_at)
        finished = connection.execute(query).scalars().all()
    first, last = int(len(finished) * 0.1), int(len(finished) * 0.9)
    return (last - first) / max((finished[last] - finished[first]).total_seconds(), 1e-9)


def stage_times(database: Database) -> dict[str, dt.datetime]:
    with database.connect() as connection:
        def one(query: sa.Select[Any]) -> dt.datetime:
            return connection.execute(query).scalar()

        return {
            "first_received": one(sa.select(sa.func.min(hl7_messages.c.received_at))),
            "last_received": one(sa.select(sa.func.max(hl7_messages.c.received_at))),
            "last_prediction": one(sa.select(sa.func.max(predictions.c.created_at))),
            "last_labels": one(sa.select(sa.func.max(study_labels.c.labelled_at))),
            "last_writeback": one(sa.select(sa.func.max(writebacks.c.finished_at))),
        }


def throughput(work: Path, n: int, connections: int, triton_cpus: int = 0) -> dict[str, Any]:
    texts = [report.text for report in generate_corpus(n, BENCH_SEED)]
    studies = write_studies(work / "studies", n, "T")
    # Pinned, Triton has CPUs of its own (the model of a classifier on its own device): it runs at normal
    # priority there rather than the shipped "idle", which would leave it whatever other processes on the
    # machine do not take. Unpinned, it runs as shipped.
    daemon = Daemon(work / "state-throughput", triton_priority="normal" if triton_cpus else "idle")
    try:
        daemon.wait_ready()
        assert daemon.database is not None
        pinning = daemon.pin(triton_cpus) if triton_cpus else None
        store_seconds = store_studies(daemon, work / "studies", n)
        reference_texts = texts[: min(n, 1000)]
        triton_before = daemon.cpu_split()[2]
        before = asyncio.run(classifier_rate(daemon, reference_texts))
        # Triton's CPU per report alone (with the warm-up call): how busy the classifier keeps its CPUs by itself.
        before["triton_cpu_ms_per_report"] = round(
            1000 * (daemon.cpu_split()[2] - triton_before) / before["reports"], 1
        )
        messages = [oru(f"T{i:06d}", accession, patient, text) for i, ((_, accession, patient), text) in
                    enumerate(zip(studies, texts))]
        cpu_before = daemon.cpu_split()
        started = time.perf_counter()
        ack = asyncio.run(send_reports(daemon.hl7_port, messages, connections, None))
        sent_seconds = time.perf_counter() - started
        done = sa.select(sa.func.count()).select_from(writebacks)
        wait_until("every study written back", lambda: count(daemon.database, done) >= n, timeout=7200, every=2.0)
        own, own_system, children = (end - start for end, start in zip(daemon.cpu_split(), cpu_before))
        times = stage_times(daemon.database)
        steady = steady_rate(daemon.database)
        failed = count(daemon.database, sa.select(sa.func.count()).select_from(jobs).where(jobs.c.state == "failed"))
        # The classifier alone once more, right after: the machine's speed drifts over the minutes in between,
        # and the pipeline is compared with the mean of both.
        after = asyncio.run(classifier_rate(daemon, reference_texts))
    finally:
        daemon.stop()
    first = times["first_received"]
    span = {stage: round((moment - first).total_seconds(), 1) for stage, moment in times.items()}
    seconds = span["last_writeback"]
    classifier = (before["reports_per_s"] + after["reports_per_s"]) / 2
    rate = n / seconds
    busy = None
    if pinning is not None:
        # Of the CPUs each side was pinned to, the share it kept busy from first receipt to last write-back
        # (the HL7 sending and the waits of this process also run on the daemon's side).
        busy = {"triton": round(children / (seconds * len(pinning["triton_cpus"])), 2),
                "daemon": round(own / (seconds * len(pinning["daemon_cpus"])), 2)}
    return {
        "reports": n,
        "pinning": pinning or "none: Triton and the daemon share every CPU",
        "studies_stored_in_s": round(store_seconds, 1),
        "hl7_sent_in_s": round(sent_seconds, 1),
        "ack_p50_ms": round(1000 * percentile(ack, 0.5), 1),
        "seconds_from_first_receipt": span,
        "reports_per_s": round(rate, 1),
        "stage_rates_per_s": {
            stage: round(n / max(s, 1e-9), 1) for stage, s in span.items() if stage != "first_received"
        },
        "classifier_alone": {"before": before, "after": after, "reports_per_s": round(classifier, 1)},
        "pipeline_vs_classifier": round(rate / classifier, 3),
        # Between the 10th and 90th percentile of the write-backs: without the run's start and tail.
        "steady_reports_per_s": round(steady, 1),
        "steady_vs_classifier": round(steady / classifier, 3),
        "cpu_busy_while_labelling": busy or "not pinned",
        "daemon_cpu_seconds": round(own + children, 1),
        # Where it went, per report: the daemon's own process (intake, linking, write-back: Python) and
        # Triton's processes (the classifier).
        # (daemon_system: the part of the daemon's spent in the kernel: file writes, fsyncs, sockets.)
        "cpu_ms_per_report": {"daemon": round(1000 * own / n, 1), "daemon_system": round(1000 * own_system / n, 1),
                              "triton": round(1000 * children / n, 1)},
        "failed_jobs": failed,
    }


def latency(work: Path, n: int, rate: float) -> dict[str, Any]:
    from tests.peers.orthanc import find_binary, run_orthanc

    if find_binary() is None:
        return {"skipped": "Orthanc (Debian package orthanc) is not installed"}
    texts = [report.text for report in generate_corpus(n, BENCH_SEED + 1)]
    studies = write_studies(work / "latency-studies", n, "L")
    with tempfile.TemporaryDirectory(prefix="orthanc-") as folder, run_orthanc(Path(folder)) as orthanc:
        daemon = Daemon(work / "state-latency", forward_to=[orthanc.address])
        try:
            daemon.wait_ready()
            assert daemon.database is not None
            store_studies(daemon, work / "latency-studies", n)
            messages = [oru(f"L{i:06d}", accession, patient, text) for i, ((_, accession, patient), text) in
                        enumerate(zip(studies, texts))]
            asyncio.run(send_reports(daemon.hl7_port, messages, 1, rate))
            forwarded = done_jobs("forward")
            wait_until("every SR forwarded", lambda: count(daemon.database, forwarded) >= n, timeout=1800)
            values = latencies(daemon.database)
            srs = len(orthanc.find("Instance", Modality="SR"))
        finally:
            daemon.stop()
    return {
        "reports": n,
        "rate_per_s": rate,
        "latency_s": {
            "p50": round(percentile(values, 0.5), 3),
            "p95": round(percentile(values, 0.95), 3),
            "max": round(max(values), 3),
        },
        "srs_in_orthanc": srs,
    }


def latencies(database: Database) -> list[float]:
    """Per report: its forward job's completion - its message's receipt."""
    with database.connect() as connection:
        received = {
            row.id: row.received_at
            for row in connection.execute(
                sa.select(reports.c.id, hl7_messages.c.received_at).join(
                    hl7_messages, hl7_messages.c.id == reports.c.message_id
                )
            )
        }
        label_report = dict(connection.execute(sa.select(study_labels.c.id, study_labels.c.report_id)).all())
        forwards = connection.execute(sa.select(jobs.c.payload, jobs.c.finished_at).where(
            jobs.c.kind == "forward", jobs.c.state == "done")).all()
    result = []
    for payload, finished in forwards:
        report_id = label_report.get(int(payload["study_label_id"]))
        if report_id in received:
            result.append((finished - received[report_id]).total_seconds())
    return result


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


@contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="neurolabel-pipeline-"))
    try:
        yield folder
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=5000, help="reports (and studies) for the throughput run")
    parser.add_argument("--connections", type=int, default=4, help="MLLP connections for the throughput run")
    parser.add_argument("--latency-reports", type=int, default=300, help="reports for the latency run (0: skip)")
    parser.add_argument("--rate", type=float, default=10.0, help="reports/s in the latency run")
    parser.add_argument("--triton-cpus", type=int, default=0,
                        help="pin Triton to this many CPUs and the daemon to the rest (0: no pinning)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, databases)")
    parser.add_argument("--json", type=Path, help="also write the result to this file")
    args = parser.parse_args()
    with workspace(args.keep) as work:
        result: dict[str, Any] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
            "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if args.reports:
            result["throughput"] = throughput(work, args.reports, args.connections, args.triton_cpus)
            print(json.dumps(result["throughput"], indent=2), flush=True)
        if args.latency_reports:
            result["latency"] = latency(work, args.latency_reports, args.rate)
            print(json.dumps(result["latency"], indent=2), flush=True)
        if args.keep:
            result["work_folder"] = str(work)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
