"""Mixed load for the daemon under test: HL7 senders (MLLP) and C-STORE associations (pynetdicom SCU).

Every sender behaves like a real interface engine or modality: it keeps a message or an instance until it
gets a positive answer, and resends it (same MSH-10, same SOP Instance UID) after a refused connection,
a dropped connection, a timeout or an error status. The `Ledger` records what was acknowledged, so the
test can check afterwards that all of it is in the database and on disk, exactly once.

Test patients have names, ids and report texts that the privacy scan looks for in logs and audit files.
"""

from __future__ import annotations

import copy
import json
import queue
import random
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

from daemon.hl7.escapes import Delimiters, escape
from daemon.hl7.framing import END_BLOCK, frame
from tests.conftest import REPO_ROOT
from tests.hl7.messages import oru

CALLING_AE = "RELIABILITY"
CALLED_AE = "NEUROLABEL"
SUCCESS = 0x0000
# Warning statuses (PS3.4 B.2.3): stored, with a remark.
WARNINGS = (0x0001, 0xB000, 0xB006, 0xB007)
PATIENT_PREFIX = "RELPID"
NAME_FAMILY = "QUOKKAFIELD"
NAME_GIVEN = ("ZEPHYRINE", "BARNABY", "OTTOLINE", "CASIMIR", "PERPETUA", "LEOFRIC")
REPORTS_FILE = REPO_ROOT / "data" / "testset" / "heldout.jsonl"


def report_texts(limit: int = 40) -> list[str]:
    """Held-out report texts (realistic wording, several labels), shortest first to keep inference cheap."""
    texts = [json.loads(line)["text"] for line in REPORTS_FILE.read_text().splitlines() if line.strip()]
    return sorted(texts, key=len)[:limit]


@dataclass(frozen=True)
class Case:
    """One examination: a study of `instances` MR objects and the report that belongs to it."""

    number: int
    accession: str
    study_uid: str
    series_uid: str
    sop_uids: tuple[str, ...]
    control_id: str
    text: str
    patient_id: str
    patient_name: str

    def hl7(self) -> bytes:
        delimiters = Delimiters()
        lines = [escape(line, delimiters) for line in self.text.split("\n")]
        family, given = self.patient_name.split("^")
        return oru(
            self.control_id, accession=self.accession, lines=lines, charset="UNICODE UTF-8",
            patient=f"PID|1||{self.patient_id}^^^HOSP^MR||{family}^{given}||19700101|F",
        ).encode("utf-8")


class Cases:
    """Cases with unique identifiers (prefix + number), deterministic for a seed."""

    def __init__(self, prefix: str, *, instances: int = 3, seed: int = 9) -> None:
        self.prefix = prefix
        self.instances = instances
        self.random = random.Random(seed)
        self.texts = report_texts()
        self.count = 0
        self.lock = threading.Lock()

    def next(self) -> Case:
        with self.lock:
            self.count += 1
            number = self.count
            text = self.random.choice(self.texts)
            given = self.random.choice(NAME_GIVEN)
        return Case(
            number=number,
            accession=f"{self.prefix}{number:05d}",
            study_uid=generate_uid(),
            series_uid=generate_uid(),
            sop_uids=tuple(generate_uid() for _ in range(self.instances)),
            control_id=f"{self.prefix}M{number:05d}",
            text=text,
            patient_id=f"{PATIENT_PREFIX}{number:06d}",
            patient_name=f"{NAME_FAMILY}^{given}",
        )

    def take(self, count: int) -> list[Case]:
        return [self.next() for _ in range(count)]


def personal_strings(texts: Sequence[str] | None = None) -> list[str]:
    """What must never appear in a log or audit file: names, patient ids, and report sentences."""
    strings = [NAME_FAMILY, *NAME_GIVEN, PATIENT_PREFIX]
    for text in texts if texts is not None else report_texts():
        for line in text.replace(". ", ".\n").split("\n"):
            line = line.strip()
            if len(line) >= 24:
                strings.append(line[:60])
    return strings


_TEMPLATE: list[Dataset] = []


def study_datasets(case: Case) -> list[Dataset]:
    """The case's MR instances, made of pydicom's MR_small with the case's UIDs, accession and patient."""
    if not _TEMPLATE:
        _TEMPLATE.append(pydicom.dcmread(str(get_testdata_file("MR_small.dcm"))))
    template = _TEMPLATE[0]
    result = []
    for number, sop_uid in enumerate(case.sop_uids, 1):
        dataset = copy.deepcopy(template)
        dataset.StudyInstanceUID = case.study_uid
        dataset.SeriesInstanceUID = case.series_uid
        dataset.SOPInstanceUID = sop_uid
        dataset.file_meta.MediaStorageSOPInstanceUID = sop_uid
        dataset.AccessionNumber = case.accession
        dataset.PatientID = case.patient_id
        dataset.PatientName = case.patient_name
        dataset.StudyDate = time.strftime("%Y%m%d")
        dataset.Modality = "MR"
        dataset.InstanceNumber = number
        result.append(dataset)
    return result


@dataclass
class Ledger:
    """What the daemon acknowledged, and how it answered; thread-safe."""

    hl7_acked: dict[str, Case] = field(default_factory=dict)
    instances_acked: dict[str, Case] = field(default_factory=dict)
    hl7_codes: Counter[str] = field(default_factory=Counter)
    store_statuses: Counter[int] = field(default_factory=Counter)
    hl7_retries: int = 0
    store_retries: int = 0
    # (monotonic time, "hl7" | "dicom", seconds from request to answer)
    latencies: list[tuple[float, str, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hl7_answer(self, case: Case, code: str, seconds: float) -> None:
        with self.lock:
            self.hl7_codes[code] += 1
            if code == "AA":
                self.hl7_acked[case.control_id] = case
                self.latencies.append((time.monotonic(), "hl7", seconds))

    def store_answer(self, case: Case, sop_uid: str, status: int, seconds: float) -> None:
        with self.lock:
            self.store_statuses[status] += 1
            if status == SUCCESS or status in WARNINGS:
                self.instances_acked[sop_uid] = case
                self.latencies.append((time.monotonic(), "dicom", seconds))

    def retried(self, kind: str) -> None:
        with self.lock:
            if kind == "hl7":
                self.hl7_retries += 1
            else:
                self.store_retries += 1

    def studies(self) -> dict[str, Case]:
        """Study UID -> case, for every study with at least one acknowledged instance."""
        with self.lock:
            return {case.study_uid: case for case in self.instances_acked.values()}

    def complete_cases(self) -> list[Case]:
        """Cases whose report and every instance were acknowledged."""
        with self.lock:
            acked = set(self.instances_acked)
            return [c for c in self.hl7_acked.values() if all(uid in acked for uid in c.sop_uids)]


class Worker(threading.Thread):
    """A sender thread fed by a queue of cases; None ends it. `abandon` makes it give up what it holds."""

    def __init__(self, name: str, port: int, ledger: Ledger, abandon: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.port = port
        self.ledger = ledger
        self.abandon = abandon
        self.work: queue.Queue[Case | None] = queue.Queue()
        self.failure: BaseException | None = None
        self.idle = threading.Event()

    def run(self) -> None:
        try:
            self.serve()
        except BaseException as exc:  # reported by the test through `failure`
            self.failure = exc

    def serve(self) -> None:
        raise NotImplementedError

    def cases(self) -> Iterator[Case]:
        while True:
            self.idle.set()
            case = self.work.get()
            self.idle.clear()
            if case is None:
                return
            yield case


class Hl7Sender(Worker):
    """One persistent MLLP connection; a message is resent until it gets AA."""

    def __init__(self, name: str, port: int, ledger: Ledger, abandon: threading.Event, *,
                 timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(name, port, ledger, abandon)
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.connection: socket.socket | None = None

    def serve(self) -> None:
        try:
            for case in self.cases():
                self.send(case)
        finally:
            self._close()

    def send(self, case: Case) -> None:
        payload = frame(case.hl7())
        while not self.abandon.is_set():
            started = time.perf_counter()
            try:
                if self.connection is None:
                    self.connection = self._connect()
                self.connection.sendall(payload)
                ack = read_frame(self.connection)
            except (OSError, EOFError):
                self._close()
                self.ledger.retried("hl7")
                time.sleep(0.1)
                continue
            code = ack_code(ack)
            self.ledger.hl7_answer(case, code, time.perf_counter() - started)
            if code == "AA":
                return
            self.ledger.retried("hl7")
            time.sleep(0.2)

    def _connect(self) -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        if self.ssl_context is not None:
            connection = self.ssl_context.wrap_socket(connection, server_hostname="localhost")
        return connection

    def _close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except OSError:
                pass
            self.connection = None


def read_frame(connection: socket.socket) -> bytes:
    """One MLLP frame's payload; EOFError if the peer closes first."""
    data = bytearray()
    while not data.endswith(END_BLOCK + b"\r"):
        chunk = connection.recv(65536)
        if not chunk:
            raise EOFError("connection closed before the acknowledgement")
        data += chunk
    return bytes(data).strip(b"\x0b\x1c\r")


def ack_code(ack: bytes) -> str:
    for segment in ack.split(b"\r"):
        if segment.startswith(b"MSA|"):
            return segment.split(b"|")[1].decode("ascii", "replace")
    return "?"


class StoreSender(Worker):
    """C-STOREs each case's study over its own association; instances not answered with success are resent."""

    def __init__(self, name: str, port: int, ledger: Ledger, abandon: threading.Event, *,
                 calling_ae: str = CALLING_AE, timeout: float = 30.0) -> None:
        super().__init__(name, port, ledger, abandon)
        self.ae = AE(ae_title=calling_ae)
        self.ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        self.ae.acse_timeout = timeout
        self.ae.dimse_timeout = timeout
        self.ae.network_timeout = timeout
        self.ae.connection_timeout = 5

    def serve(self) -> None:
        for case in self.cases():
            self.send(case)

    def send(self, case: Case) -> None:
        remaining = study_datasets(case)
        while remaining and not self.abandon.is_set():
            assoc = self.ae.associate("127.0.0.1", self.port, ae_title=CALLED_AE)
            if not assoc.is_established:
                self.ledger.retried("dicom")
                time.sleep(0.2)
                continue
            no_delay(assoc)
            try:
                while remaining:
                    dataset = remaining[0]
                    started = time.perf_counter()
                    try:
                        answer = assoc.send_c_store(dataset)
                    except (RuntimeError, OSError, ValueError):
                        answer = None
                    status = int(answer.Status) if answer is not None and "Status" in answer else None
                    if status is None:
                        break  # aborted or timed out: reassociate and resend
                    self.ledger.store_answer(case, str(dataset.SOPInstanceUID), status,
                                             time.perf_counter() - started)
                    if status != SUCCESS and status not in WARNINGS:
                        break
                    remaining.pop(0)
            finally:
                if assoc.is_established:
                    assoc.release()
            if remaining:
                self.ledger.retried("dicom")
                time.sleep(0.2)


def no_delay(assoc: object) -> None:
    raw = getattr(getattr(getattr(assoc, "dul", None), "socket", None), "socket", None)
    if isinstance(raw, socket.socket):
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass
class Load:
    """A pool of HL7 senders and C-STORE associations sharing one ledger."""

    hl7_port: int
    dicom_port: int
    hl7_senders: int = 2
    associations: int = 2
    ledger: Ledger = field(default_factory=Ledger)
    abandon: threading.Event = field(default_factory=threading.Event)
    workers: list[Worker] = field(default_factory=list)
    producers: list[Producer] = field(default_factory=list)
    _turn: int = 0

    def __post_init__(self) -> None:
        self.hl7 = [Hl7Sender(f"hl7-{n}", self.hl7_port, self.ledger, self.abandon) for n in range(self.hl7_senders)]
        self.dicom = [StoreSender(f"scu-{n}", self.dicom_port, self.ledger, self.abandon)
                      for n in range(self.associations)]
        self.workers = [*self.hl7, *self.dicom]
        for worker in self.workers:
            worker.start()

    def submit(self, case: Case) -> None:
        """Queue the case's report and study on the least busy senders (in turn)."""
        self._turn += 1
        for pool in (self.hl7, self.dicom):
            turn = self._turn
            ranked = sorted(enumerate(pool), key=lambda item: (item[1].work.qsize(), (turn + item[0]) % len(pool)))
            ranked[0][1].work.put(case)

    def backlog(self) -> int:
        return sum(worker.work.qsize() + (0 if worker.idle.is_set() else 1) for worker in self.workers)

    def wait_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.backlog():
            self.raise_failures()
            if time.monotonic() > deadline:
                raise AssertionError(f"senders still busy after {timeout} s ({self.backlog()} cases in hand)")
            time.sleep(0.05)

    def close(self, timeout: float = 60.0) -> None:
        for worker in self.workers:
            worker.work.put(None)
        for worker in self.workers:
            worker.join(timeout)
        self.raise_failures()

    def give_up(self) -> None:
        for producer in self.producers:
            producer.stopped.set()
        self.abandon.set()
        self.close(timeout=30.0)

    def __enter__(self) -> Load:
        return self

    def __exit__(self, error_type: object, error: object, traceback: object) -> None:
        """On an error the senders give up what they hold (the test is failing anyway); else they finish."""
        if error is not None:
            self.give_up()
        else:
            self.close()

    def raise_failures(self) -> None:
        for worker in self.workers:
            if worker.failure is not None:
                raise AssertionError(f"sender {worker.name} failed: {worker.failure!r}") from worker.failure


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


class Producer(threading.Thread):
    """Feeds new cases to a Load until stopped: `per_second` of them, or enough to keep `backlog` in hand."""

    def __init__(self, load: Load, cases: Cases, *, per_second: float | None = None, backlog: int = 8) -> None:
        super().__init__(name="producer", daemon=True)
        self.load, self.cases, self.per_second, self.backlog = load, cases, per_second, backlog
        self.stopped = threading.Event()
        load.producers.append(self)

    def run(self) -> None:
        interval = 1.0 / self.per_second if self.per_second else 0.02
        while not self.stopped.wait(interval):
            if self.per_second or self.load.backlog() < self.backlog:
                self.load.submit(self.cases.next())

    def stop(self) -> None:
        self.stopped.set()
        self.join()
