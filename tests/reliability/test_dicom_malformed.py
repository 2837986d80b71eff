"""Malformed DICOM over the wire, against `neurolabel run` as a process: garbage before an association,
PDUs whose lengths lie, truncated PDUs and data sets, huge elements, invalid and path-escaping UIDs.

Every case must be answered (an error status for a C-STORE, A-ASSOCIATE-RJ, or A-ABORT / closing the
connection for a broken PDU) promptly, without the daemon's memory jumping, and be audited; no file may
appear outside the storage folder; and afterwards a well-formed C-STORE still succeeds.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from daemon.store.schema import audit_events, instances
from tests.reliability.conftest import DaemonFactory, Figures
from tests.reliability.daemon_process import DaemonProcess
from tests.reliability.dicom_wire import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    P_DATA,
    CONTEXT_ID,
    RawAssociation,
    associate_rq,
    encode_dataset,
    pdu,
    pdv,
    store_pdus,
)
from tests.reliability.load import CALLING_AE, Cases, StoreSender, Ledger

pytestmark = pytest.mark.slow

CANNOT_UNDERSTAND = 0xC000
# Answered promptly: well inside pynetdicom's 30 s ACSE and 60 s network timeouts.
PROMPT_SECONDS = 5.0
RSS_GROWTH_LIMIT = 150 * 1024 * 1024


def mr_dataset(**changes: object) -> pydicom.Dataset:
    dataset = pydicom.dcmread(str(get_testdata_file("MR_small.dcm")))
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    for keyword, value in changes.items():
        if value is None:
            delattr(dataset, keyword)
        else:
            setattr(dataset, keyword, value)
    return dataset


def raw_with_uid(keyword: str, value: str) -> tuple[bytes, str]:
    """Data set bytes with `keyword` set to `value` (written raw, no validation), and the SOP Instance UID."""
    dataset = mr_dataset()
    dataset[keyword].value = value
    return encode_dataset(dataset), str(dataset.SOPInstanceUID) if keyword != "SOPInstanceUID" else value


def with_huge_element(length: int = 0xFFFFFFF0) -> tuple[bytes, str]:
    """A private UN element claiming `length` bytes (4 GB, or undefined) inside the header the index reads."""
    dataset = mr_dataset()
    data = encode_dataset(dataset)
    at = data.find(struct.pack("<HH", 0x0010, 0x0010) + b"PN")
    element = struct.pack("<HH", 0x0009, 0x1001) + b"UN\x00\x00" + struct.pack("<L", length) + b"\x00" * 16
    return data[:at] + element + data[at:], str(dataset.SOPInstanceUID)


@dataclass(frozen=True)
class Outcome:
    answer: str  # "status 0xC000", "abort", "rejected", "closed", "accepted"
    seconds: float


def store_case(
    dataset_bytes: bytes, sop_uid: str, *, pdus: Callable[[list[bytes]], list[bytes]] | None = None
) -> Callable[[int], Outcome]:
    def run(port: int) -> Outcome:
        with RawAssociation(port) as raw:
            answer = raw.associate(CALLING_AE)
            assert answer.pdu_type == A_ASSOCIATE_AC, answer
            frames = store_pdus(dataset_bytes, sop_uid)
            started = time.monotonic()
            for data in pdus(frames) if pdus else frames:
                raw.send(data)
            status = raw.store_status()
            seconds = time.monotonic() - started
            return Outcome(f"status 0x{status:04X}" if status is not None else "abort", seconds)
    return run


def wire_case(data: bytes, *, associate_first: bool = False, close_after: bool = False) -> Callable[[int], Outcome]:
    def run(port: int) -> Outcome:
        with RawAssociation(port) as raw:
            if associate_first:
                assert raw.associate(CALLING_AE).pdu_type == A_ASSOCIATE_AC
            started = time.monotonic()
            raw.send(data)
            if close_after:
                return Outcome("closed", 0.0)
            raw.socket.settimeout(PROMPT_SECONDS)
            answer = raw.answer()
            seconds = time.monotonic() - started
            if answer.pdu_type == A_ASSOCIATE_RJ:
                return Outcome("rejected", seconds)
            if answer.pdu_type == A_ASSOCIATE_AC:
                return Outcome("accepted", seconds)
            if answer.pdu_type == A_ABORT or answer.closed:
                return Outcome("abort", seconds)
            return Outcome(f"pdu 0x{answer.pdu_type:02X}" if answer.pdu_type else "silence", seconds)
    return run


def patched_rq(offset: int, value: bytes) -> bytes:
    data = bytearray(associate_rq(CALLING_AE))
    data[offset:offset + len(value)] = value
    return bytes(data)


def p_data_of(dataset: bytes, sop_uid: str) -> bytes:
    return store_pdus(dataset, sop_uid)[0]


def cases() -> dict[str, tuple[Callable[[int], Outcome], set[str]]]:
    good = mr_dataset()
    good_bytes, good_uid = encode_dataset(good), str(good.SOPInstanceUID)
    rq = associate_rq(CALLING_AE)
    deflate_bomb = zlib.compress(b"\x00" * (64 << 20))[2:-4]
    abort = {"abort"}
    error = {f"status 0x{CANNOT_UNDERSTAND:04X}"}
    return {
        # before any association
        "HTTP request instead of DICOM": (wire_case(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), abort),
        "unknown PDU type": (wire_case(pdu(0x09, b"\x00" * 16)), abort),
        "A-ASSOCIATE-RQ announcing 4 GB": (wire_case(pdu(0x01, b"\x00" * 16, length=0xFFFFFFF0)), abort),
        "A-ASSOCIATE-RQ truncated, connection closed": (wire_case(rq[: len(rq) // 2], close_after=True), {"closed"}),
        "A-ASSOCIATE-RQ with an item longer than the PDU": (wire_case(patched_rq(6 + 68 + 2, b"\xff\xff")), abort),
        "A-ASSOCIATE-RQ with protocol version 2": (wire_case(patched_rq(6, b"\x00\x02")), {"rejected", "abort"}),
        "A-ASSOCIATE-RQ to another AE title": (wire_case(patched_rq(10, b"SOMEONE_ELSE    ")), {"rejected"}),
        "A-ASSOCIATE-RQ with NULs as calling AE": (
            wire_case(patched_rq(26, b"\x00" * 16)), {"rejected", "abort", "accepted"}),
        "P-DATA-TF before any association": (wire_case(p_data_of(good_bytes, good_uid)), abort),
        # inside an association
        "P-DATA-TF announcing 2 GB": (
            wire_case(pdu(P_DATA, b"\x00" * 16, length=0x7FFFFFF0), associate_first=True), abort),
        "P-DATA-TF item longer than the PDU": (
            wire_case(pdu(P_DATA, pdv(CONTEXT_ID, 0x03, b"\x00" * 8, length=4000)), associate_first=True), abort),
        "P-DATA-TF without items": (wire_case(pdu(P_DATA, b""), associate_first=True), abort),
        "P-DATA-TF for an unknown presentation context": (
            wire_case(pdu(P_DATA, pdv(99, 0x03, b"\x00" * 8)), associate_first=True), abort),
        "command set of garbage": (
            wire_case(pdu(P_DATA, pdv(CONTEXT_ID, 0x03, b"\xde\xad" * 40)), associate_first=True), abort),
        "C-STORE data set truncated": (store_case(good_bytes[: len(good_bytes) // 3], good_uid), error),
        "C-STORE data set of random bytes": (store_case(bytes(range(256)) * 8, generate_uid()), error),
        "C-STORE empty data set": (store_case(b"", generate_uid()), error),
        "C-STORE element claiming 4 GB": (store_case(*with_huge_element()), error),
        "C-STORE element of undefined length never ended": (store_case(*with_huge_element(0xFFFFFFFF)), error),
        "C-STORE big-endian bytes in a little-endian context": (
            store_case(encode_dataset(mr_dataset(), little_endian=False), generate_uid()), error),
        "C-STORE deflate bomb in an explicit context": (store_case(deflate_bomb, generate_uid()), error),
        "C-STORE SOP Instance UID with letters": (store_case(*raw_with_uid("SOPInstanceUID", "1.2.abc.4")), error),
        "C-STORE SOP Instance UID escaping the folder": (
            store_case(*raw_with_uid("SOPInstanceUID", "../../../../tmp/neurolabel-escape")), error),
        "C-STORE Study Instance UID escaping the folder": (
            store_case(*raw_with_uid("StudyInstanceUID", "../../../../tmp")), error),
        "C-STORE Series Instance UID absolute path": (store_case(*raw_with_uid("SeriesInstanceUID", "/etc")), error),
        "C-STORE UID of 65 characters": (store_case(*raw_with_uid("SeriesInstanceUID", "1." + "2" * 63)), error),
        "C-STORE UID with a leading zero": (store_case(*raw_with_uid("StudyInstanceUID", "1.02.3")), error),
        "C-STORE without Study Instance UID": (
            store_case(encode_dataset(mr_dataset(StudyInstanceUID=None)), generate_uid()), error),
        "C-STORE request and data set disagree on the SOP Instance UID": (
            store_case(good_bytes, generate_uid()), error),
    }


def daemon_ok(daemon: DaemonProcess) -> None:
    """A well-formed study still goes in."""
    ledger = Ledger()
    sender = StoreSender("check", daemon.dicom_port, ledger, abandon=threading.Event())
    case = Cases("MALF", instances=1).next()
    sender.send(case)
    assert list(ledger.instances_acked) == list(case.sop_uids), ledger.store_statuses


def test_malformed_dicom_is_answered_audited_and_harmless(daemon_factory: DaemonFactory, figures: Figures,
                                                          tmp_path: Path) -> None:
    daemon = daemon_factory("dicom-malformed", extra={"hl7": {"enabled": False}})
    daemon.start()
    baseline_rss = daemon.rss_bytes()
    outside_before = set(Path("/tmp").glob("neurolabel-escape*"))
    results: dict[str, str] = {}
    problems: list[str] = []
    for name, (run, expected) in cases().items():
        with daemon.reading() as connection:
            audit_before = connection.execute(sa.select(sa.func.max(audit_events.c.id))).scalar() or 0
        outcome = run(daemon.dicom_port)
        results[name] = outcome.answer
        if outcome.answer not in expected:
            problems.append(f"{name}: {outcome.answer}, expected {sorted(expected)}")
        if outcome.seconds > PROMPT_SECONDS:
            problems.append(f"{name}: answered after {outcome.seconds:.1f} s")
        if not daemon.alive:
            pytest.fail(f"daemon died on {name!r}:\n{daemon.log_text()[-3000:]}")
        if daemon.rss_bytes() - baseline_rss > RSS_GROWTH_LIMIT:
            problems.append(f"{name}: resident memory grew to {daemon.rss_bytes() >> 20} MB")
        if not _audited_since(daemon, audit_before):
            problems.append(f"{name}: not audited")
    daemon_ok(daemon)
    with daemon.reading() as connection:
        stored = connection.execute(sa.select(sa.func.count()).select_from(instances)).scalar()
    storage = daemon.config.storage.path.resolve()
    stray = [p for p in daemon.root.rglob("*") if p.is_file() and "escape" in p.name]
    outside = set(Path("/tmp").glob("neurolabel-escape*")) - outside_before
    assert not problems, "\n".join(problems)
    assert stored == 1, "only the well-formed instance is indexed"
    assert not stray and not outside, (stray, outside, storage)
    figures.record(cases=len(results), answers=results,
                   rss_growth_mb=round((daemon.rss_bytes() - baseline_rss) / 2**20, 1))


def _audited_since(daemon: DaemonProcess, after: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with daemon.reading() as connection:
            kinds = connection.execute(
                sa.select(audit_events.c.kind, audit_events.c.outcome).where(audit_events.c.id > after)
            ).all()
        if any(outcome in ("failure", "rejected") for _, outcome in kinds):
            return True
        time.sleep(0.1)
    return False

