"""Access control against `neurolabel run` as a process: allowlists, TLS with client certificates, storage
paths, and what reaches the logs and the audit file.

- A calling AE title that is not allowed is rejected (A-ASSOCIATE-RJ) and audited; an HL7 sender
  (MSH-3^MSH-4) that is not allowed gets AR and no report is stored; a peer outside allowed_networks is
  disconnected before it can send anything.
- With TLS required (client certificates on): plaintext HL7 and DICOM get nowhere, nor does a client
  without a certificate or with one signed by another CA; the right certificate works.
- UIDs crafted to escape the storage folder are refused (0xC000) and nothing is written outside it.
- With DEBUG logging, a full run (reports, studies, labelling, refusals) leaves no patient name, patient
  id or report text in the log, the audit file or the audit table (every daemon of the suite is scanned
  too: see conftest.py).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

from daemon.hl7.framing import frame
from daemon.store.schema import audit_events, hl7_messages, instances, reports
from tests.peers.triton import Certificates, make_certificates
from tests.reliability.conftest import DaemonFactory, Figures
from tests.reliability.daemon_process import DaemonProcess
from tests.reliability.dicom_wire import A_ASSOCIATE_AC, RawAssociation, encode_dataset, store_pdus
from tests.reliability.load import (
    CALLED_AE,
    Cases,
    Hl7Sender,
    Ledger,
    StoreSender,
    ack_code,
    personal_strings,
    read_frame,
    study_datasets,
)
from tests.reliability.privacy import audit_files, scan
from tests.reliability.test_dicom_malformed import raw_with_uid
from tests.reliability.triton_service import TritonService
from tests.reliability.verify import settle, verify

pytestmark = pytest.mark.slow


def hl7_exchange(port: int, message: bytes, context: ssl.SSLContext | None = None, timeout: float = 10.0) -> str:
    """Send one message; the ACK code, or why there was none ("closed", "tls: ...", "refused")."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            connection = context.wrap_socket(raw, server_hostname="localhost") if context else raw
            connection.sendall(frame(message))
            return ack_code(read_frame(connection))
    except ssl.SSLError as exc:
        return f"tls: {exc.reason}"
    except (EOFError, ConnectionError):
        return "closed"
    except TimeoutError:
        return "silence"


def dicom_associate(port: int, calling: str, tls: tuple[ssl.SSLContext, str] | None = None) -> str:
    ae = AE(ae_title=calling)
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title=CALLED_AE, tls_args=tls)
    try:
        if assoc.is_established:
            return "accepted"
        return "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
    finally:
        if assoc.is_established:
            assoc.release()


def audit_rows(daemon: DaemonProcess, kind: str) -> list[tuple[str, str]]:
    with daemon.reading() as connection:
        return [(row.outcome, row.detail or "") for row in connection.execute(
            sa.select(audit_events.c.outcome, audit_events.c.detail).where(audit_events.c.kind == kind))]


def wait_audited(daemon: DaemonProcess, kind: str, outcome: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(o == outcome for o, _ in audit_rows(daemon, kind)):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {outcome} {kind} audit row")
        time.sleep(0.1)


def test_disallowed_calling_ae_and_hl7_sender_are_refused(daemon_factory: DaemonFactory, figures: Figures) -> None:
    daemon = daemon_factory("allowlists", extra={
        "dicom": {"allowed_calling_aes": ["RELIABILITY"]},
        "hl7": {"allowed_senders": ["RIS^HOSPITAL"]},
    })
    daemon.start()
    assert dicom_associate(daemon.dicom_port, "INTRUDER") == "rejected"
    assert dicom_associate(daemon.dicom_port, "RELIABILITY") == "accepted"
    wait_audited(daemon, "dicom.association", "rejected")

    case = Cases("ACC").next()
    evil = case.hl7().replace(b"|RIS|HOSPITAL|", b"|EVIL|HOSPITAL|", 1)
    assert hl7_exchange(daemon.hl7_port, evil) == "AR"
    assert hl7_exchange(daemon.hl7_port, case.hl7()) == "AA"
    with daemon.reading() as connection:
        accessions = connection.execute(sa.select(reports.c.accession_number)).scalars().all()
        statuses = connection.execute(sa.select(hl7_messages.c.status, hl7_messages.c.sending_application)).all()
    assert accessions == [case.accession], "the refused sender's report is not stored as a report"
    assert ("rejected", "EVIL") in [tuple(row) for row in statuses]  # kept for review, not as a report
    wait_audited(daemon, "hl7.message", "rejected")

    outside = daemon_factory("networks", extra={"hl7": {"allowed_networks": ["192.0.2.0/24"]},
                                                "dicom": {"enabled": False}})
    outside.start()
    assert hl7_exchange(outside.hl7_port, case.hl7()) == "closed"
    wait_audited(outside, "hl7.connection", "rejected")
    figures.record(refused={"calling AE": "A-ASSOCIATE-RJ", "HL7 sender": "AR", "HL7 network": "closed"})


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Certificates, Certificates]:
    """Our CA (server and client certificates) and another CA with its own client certificate."""
    return make_certificates(tmp_path_factory.mktemp("ours")), make_certificates(tmp_path_factory.mktemp("theirs"))


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def test_tls_required_refuses_plaintext_and_wrong_certificates(
    daemon_factory: DaemonFactory, certificates: tuple[Certificates, Certificates], figures: Figures
) -> None:
    ours, theirs = certificates
    tls = {"cert": str(ours.server_cert), "key": str(ours.server_key), "ca": str(ours.ca), "require_client_cert": True}
    daemon = daemon_factory("tls", extra={"hl7.tls": tls, "dicom.tls": tls})
    daemon.start()
    message = Cases("TLS").next().hl7()
    good = client_context(ours.ca, ours.client_cert, ours.client_key)
    attempts = {
        "plaintext": None,
        "no client certificate": client_context(ours.ca),
        "client certificate of another CA": client_context(ours.ca, theirs.client_cert, theirs.client_key),
        "server certificate as client certificate": client_context(ours.ca, ours.server_cert, ours.server_key),
    }
    outcomes: dict[str, dict[str, str]] = {"hl7": {}, "dicom": {}}
    for name, context in attempts.items():
        outcomes["hl7"][name] = hl7_exchange(daemon.hl7_port, message, context)
        outcomes["dicom"][name] = dicom_associate(daemon.dicom_port, "RELIABILITY",
                                                  (context, "localhost") if context else None)
    outcomes["hl7"]["right certificate"] = hl7_exchange(daemon.hl7_port, message, good)
    outcomes["dicom"]["right certificate"] = dicom_associate(daemon.dicom_port, "RELIABILITY", (good, "localhost"))
    for protocol, results in outcomes.items():
        for name, result in results.items():
            if name == "right certificate":
                assert result in ("AA", "accepted"), (protocol, name, result)
            else:
                assert result not in ("AA", "AE", "AR", "accepted"), (protocol, name, result)
    assert daemon.alive
    figures.record(outcomes=outcomes)


def test_uids_crafted_to_escape_the_storage_folder_are_refused(daemon_factory: DaemonFactory) -> None:
    daemon = daemon_factory("paths", extra={"hl7": {"enabled": False}})
    daemon.start()
    crafted = {
        "SOPInstanceUID": ["../../../../tmp/neurolabel-escape-sop", "/tmp/neurolabel-escape-abs", "1.2\\..\\..\\x"],
        "StudyInstanceUID": ["..", "../../../../tmp/neurolabel-escape-study", "1.2/../../3"],
        "SeriesInstanceUID": ["/etc", "~root", "1.2.3\x00/../x"],
    }
    before = {p for p in Path("/tmp").iterdir() if "neurolabel-escape" in p.name}
    for keyword, values in crafted.items():
        for value in values:
            data, sop_uid = raw_with_uid(keyword, value)
            with RawAssociation(daemon.dicom_port) as raw:
                assert raw.associate().pdu_type == A_ASSOCIATE_AC
                for fragment in store_pdus(data, sop_uid):
                    raw.send(fragment)
                assert raw.store_status() == 0xC000, (keyword, value)
    after = {p for p in Path("/tmp").iterdir() if "neurolabel-escape" in p.name}
    files = [p for p in daemon.config.storage.path.rglob("*") if p.is_file()]
    with daemon.reading() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(instances)).scalar() == 0
    assert after == before and files == []
    deadline = time.monotonic() + 10  # audit rows are committed by the index committer, a moment later
    while sum(1 for outcome, _ in audit_rows(daemon, "dicom.instance") if outcome == "rejected") < 9:
        assert time.monotonic() < deadline, audit_rows(daemon, "dicom.instance")
        time.sleep(0.1)


def test_logs_and_audit_carry_no_personal_data(
    daemon_factory: DaemonFactory, triton: TritonService, figures: Figures
) -> None:
    daemon = daemon_factory("privacy", triton_url=triton.grpc_url, extra={"daemon": {"log_level": "DEBUG"}})
    daemon.start()
    ledger = Ledger()
    abandon = threading.Event()
    hl7 = Hl7Sender("hl7", daemon.hl7_port, ledger, abandon)
    dicom = StoreSender("scu", daemon.dicom_port, ledger, abandon)
    cases = Cases("PRIV").take(6)
    for case in cases:
        hl7.send(case)
        dicom.send(case)
    # Refusals that quote what was sent: a bad status, a bad UID, a malformed data set with a patient name.
    refused = Cases("PRIVX").next()
    bad_status = refused.hl7().replace(b"||MR|F\r", b"||MR|Q\r")
    assert hl7_exchange(daemon.hl7_port, bad_status) == "AE"
    datasets = study_datasets(refused)
    data = encode_dataset(datasets[0])
    with RawAssociation(daemon.dicom_port) as raw:
        assert raw.associate().pdu_type == A_ASSOCIATE_AC
        for fragment in store_pdus(data[: len(data) // 2], refused.sop_uids[0]):
            raw.send(fragment)
        assert raw.store_status() == 0xC000
    settle(daemon, ledger, timeout=120)
    verify(daemon, ledger)
    daemon.stop()
    result = scan([daemon.log_path, *audit_files(daemon.state)], personal_strings(), daemon.database)
    assert result.files >= 2 and result.audit_rows > 0
    assert not result.hits, "\n".join(map(str, result.hits[:20]))
    figures.record(files=result.files, bytes=result.bytes, audit_rows=result.audit_rows,
                   needles=len(personal_strings()), hits=len(result.hits))
