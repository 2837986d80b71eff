"""The DICOM listener against real peers: DCMTK's storescu and echoscu send pydicom's sample files.

Each test starts the listener in-process on a free port and talks to it with
DCMTK's tools (Debian package dcmtk); the few cases DCMTK cannot produce (a
corrupted byte stream, an association held open) use raw sockets or
pynetdicom as the peer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
import socket
import struct
import subprocess
import time
from io import BytesIO
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from daemon.app import Daemon, stop_daemon
from daemon.config import Config
from daemon.dicom.scp import DicomListener
from daemon.dicom.stability import STUDY_STABLE_JOB
from daemon.store.schema import audit_events, instances, jobs, series, studies
from tests.dicom.conftest import Dcmtk, dicom_config, pydicom_file, run_tool, start_listener
from tests.dicom.datasets import mr_dataset, new_uid, save
from tests.work.conftest import wait_for

AE_TITLE = "NEUROLABEL"

# pydicom's sample files, and the storescu options that make it propose their transfer syntax.
SAMPLES = {
    "MR_small.dcm": [],
    "CT_small.dcm": [],
    "JPEG-lossy.dcm": ["-xx"],  # JPEG extended (process 2 and 4)
    "SC_rgb_jpeg_dcmtk.dcm": ["-xy"],  # JPEG baseline
    "JPEG2000.dcm": ["-xw"],
    "MR_small_jp2klossless.dcm": ["-xv"],
    "MR_small_jpeg_ls_lossless.dcm": ["-xt"],
    "MR_small_RLE.dcm": ["-xr"],
    "SC_rgb_rle_2frame.dcm": ["-xr"],  # multi-frame
    "MR_small_bigendian.dcm": ["-xb"],
    "rtdose.dcm": [],  # multi-frame, implicit VR
    "image_dfl.dcm": ["-xd"],  # deflated
    "test-SR.dcm": [],  # structured report
}


def fresh_copy(name: str, folder: Path) -> Path:
    """The sample with new UIDs (several samples share theirs), pixel data untouched."""
    dataset = dcmread(pydicom_file(name))
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = generate_uid(), generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    dataset.save_as(path)
    return path


def storescu_args(port: int, *paths: Path, options: list[str] | None = None, calling: str = "MODALITY",
                  called: str = AE_TITLE) -> list[str]:
    return [*(options or []), "-v", "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, paths)]


def echoscu_args(port: int, calling: str = "MODALITY", called: str = AE_TITLE) -> list[str]:
    return ["-aet", calling, "-aec", called, "127.0.0.1", str(port)]


def select(listener_daemon: Daemon, table: sa.Table, *where: sa.ColumnElement[bool]) -> list[sa.Row]:
    with listener_daemon.services.database.connect() as connection:
        return connection.execute(sa.select(table).where(*where).order_by(table.c.id)).all()


async def audited(daemon: Daemon, count: int, *where: sa.ColumnElement[bool]) -> list[sa.Row]:
    """The audit rows matching `where` once there are `count` of them (association events are written async)."""
    found: list[sa.Row] = []

    def enough() -> bool:
        found[:] = select(daemon, audit_events, *where)
        return len(found) >= count

    await wait_for(enough, timeout=10, what=f"{count} audit rows")
    return found


def listener_of(daemon: Daemon) -> DicomListener:
    component = daemon.component("dicom")
    assert isinstance(component, DicomListener)
    return component


@pytest.fixture
async def intake(intake_config: Config) -> Daemon:  # type: ignore[misc]
    daemon = await start_listener(intake_config)
    yield daemon
    await stop_daemon(daemon, drain_seconds=5)


async def started(tmp_path: Path, extra_toml: str) -> Daemon:
    return await start_listener(dicom_config(tmp_path, extra_toml))


# --- verification and storage -------------------------------------------------------------------------------------

async def test_echo(dcmtk: Dcmtk, intake: Daemon) -> None:
    result = await run_tool(dcmtk, "echoscu", echoscu_args(listener_of(intake).port))
    assert result.returncode == 0, result.output
    audit = await audited(intake, 2, audit_events.c.kind == "dicom.association")
    assert [(row.outcome, row.actor, row.detail) for row in audit] == [
        ("success", "MODALITY@127.0.0.1", "accepted"), ("success", "MODALITY@127.0.0.1", "released")]


@pytest.mark.parametrize("name", sorted(SAMPLES))
async def test_each_kind_of_sample_is_stored_as_received(dcmtk: Dcmtk, intake: Daemon, tmp_path: Path,
                                                         name: str) -> None:
    sent = fresh_copy(name, tmp_path / "send")
    original = dcmread(sent)
    result = await run_tool(dcmtk, "storescu", storescu_args(listener_of(intake).port, sent, options=SAMPLES[name]))
    assert result.returncode == 0, result.output
    [row] = select(intake, instances)
    assert row.sop_instance_uid == original.SOPInstanceUID
    assert row.sop_class_uid == original.SOPClassUID
    stored_path = intake.services.config.storage.path / row.path
    assert row.path == f"{original.StudyInstanceUID}/{original.SeriesInstanceUID}/{original.SOPInstanceUID}.dcm"
    assert row.size_bytes == stored_path.stat().st_size
    stored = dcmread(stored_path)
    assert stored.file_meta.TransferSyntaxUID == row.transfer_syntax_uid
    assert stored.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    assert stored.file_meta.SourceApplicationEntityTitle == "MODALITY"
    if original.file_meta.TransferSyntaxUID.is_compressed:
        # Accepted in its own syntax and stored as it came: the compressed bytes are the sender's.
        assert row.transfer_syntax_uid == original.file_meta.TransferSyntaxUID
        assert stored.PixelData == original.PixelData
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Rows", "Columns"):
        assert stored.get(keyword) == original.get(keyword)
    if "PixelData" in original and not original.file_meta.TransferSyntaxUID.is_compressed:
        assert stored.pixel_array.tolist() == original.pixel_array.tolist()
    assert list((intake.services.config.storage.path / ".incoming").iterdir()) == []


async def test_study_index_stability_and_reopening(dcmtk: Dcmtk, intake: Daemon, tmp_path: Path) -> None:
    study, first_series = new_uid(), new_uid()
    files = [save(mr_dataset(study, first_series, instance_number=n, accession="ACC-77"), tmp_path / f"a{n}.dcm")
             for n in range(3)]
    port = listener_of(intake).port
    assert (await run_tool(dcmtk, "storescu", storescu_args(port, *files))).returncode == 0
    [row] = select(intake, studies)
    assert (row.study_instance_uid, row.accession_number, row.patient_id) == (study, "ACC-77", "PAT1")
    assert (row.instance_count, row.modalities, row.calling_ae_title) == (3, "MR", "MODALITY")
    assert row.total_bytes == sum(item.size_bytes for item in select(intake, instances))
    assert (row.study_date, row.study_time, row.study_description) == ("20240102", "101500", "MRI HEAD")
    assert select(intake, series)[0].instance_count == 3

    def stable_keys() -> list[str]:
        return [job.key for job in select(intake, jobs, jobs.c.kind == STUDY_STABLE_JOB)]

    await wait_for(lambda: stable_keys() == [f"study:{study}:1"], timeout=15, what="study stable")
    assert select(intake, studies)[0].state == "stable"

    later = save(mr_dataset(study, new_uid(), modality="SR"), tmp_path / "later.dcm")
    assert (await run_tool(dcmtk, "storescu", storescu_args(port, later))).returncode == 0
    reopened = select(intake, studies)[0]
    assert (reopened.instance_count, reopened.modalities) == (4, "MR\\SR")
    await wait_for(lambda: stable_keys() == [f"study:{study}:1", f"study:{study}:2"], timeout=15,
                   what="study stable again")
    details = [row.detail for row in select(intake, audit_events, audit_events.c.kind == "dicom.study")]
    assert any("reopened" in (detail or "") for detail in details)


async def test_four_associations_in_parallel(dcmtk: Dcmtk, intake: Daemon, tmp_path: Path) -> None:
    study = new_uid()
    folders = []
    for part in range(4):
        folder = tmp_path / f"part{part}"
        for number in range(10):
            save(mr_dataset(study, new_uid() if number == 0 else None, instance_number=number, pixels=64),
                 folder / f"{number}.dcm")
        folders.append(folder)
    port = listener_of(intake).port
    results = await asyncio.gather(*(
        run_tool(dcmtk, "storescu", ["+sd", *storescu_args(port, folder, calling=f"MOD{index}")])
        for index, folder in enumerate(folders)
    ))
    assert [result.returncode for result in results] == [0] * 4, [result.output[-500:] for result in results]
    assert len(select(intake, instances)) == 40
    assert select(intake, studies)[0].instance_count == 40
    accepted = await audited(intake, 4, audit_events.c.kind == "dicom.association", audit_events.c.detail == "accepted")
    assert sorted(row.actor for row in accepted) == [f"MOD{index}@127.0.0.1" for index in range(4)]


async def test_duplicates_are_kept_once_by_default(dcmtk: Dcmtk, intake: Daemon, tmp_path: Path) -> None:
    path = save(mr_dataset(), tmp_path / "one.dcm")
    port = listener_of(intake).port
    for _ in range(2):
        assert (await run_tool(dcmtk, "storescu", storescu_args(port, path))).returncode == 0
    assert len(select(intake, instances)) == 1
    outcomes = [row.outcome for row in await audited(intake, 2, audit_events.c.kind == "dicom.instance")]
    assert outcomes == ["success", "duplicate"]


# --- refusals --------------------------------------------------------------------------------------------------------

async def test_unknown_called_ae_is_rejected(dcmtk: Dcmtk, intake: Daemon) -> None:
    result = await run_tool(dcmtk, "echoscu", echoscu_args(listener_of(intake).port, called="SOMEONEELSE"))
    assert result.returncode != 0
    assert "called ae title not recognized" in result.output.lower()
    [row] = await audited(intake, 1, audit_events.c.kind == "dicom.association")
    assert (row.outcome, row.detail) == ("rejected", "called AE title is not ours")


async def test_calling_ae_allowlist_with_hosts(dcmtk: Dcmtk, tmp_path: Path) -> None:
    daemon = await started(tmp_path, '[dicom]\nallowed_calling_aes = ["MODALITY@127.0.0.1", "PACS@10.99.0.1", "ANY"]\n')
    try:
        port = listener_of(daemon).port
        outcomes = {}
        for calling in ("MODALITY", "ANY", "PACS", "STRANGER"):
            outcomes[calling] = (await run_tool(dcmtk, "echoscu", echoscu_args(port, calling=calling))).returncode
        assert outcomes["MODALITY"] == 0 and outcomes["ANY"] == 0
        assert outcomes["PACS"] != 0 and outcomes["STRANGER"] != 0
        rejected = await audited(daemon, 2, audit_events.c.outcome == "rejected")
        assert sorted(row.actor for row in rejected) == ["PACS@127.0.0.1", "STRANGER@127.0.0.1"]
    finally:
        await stop_daemon(daemon, 5)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
async def test_invalid_uid_is_refused_and_nothing_stored(dcmtk: Dcmtk, intake: Daemon, tmp_path: Path) -> None:
    dataset = mr_dataset()
    dataset.StudyInstanceUID = "1.2.840.999.bad-uid"
    path = save(dataset, tmp_path / "bad.dcm")
    result = await run_tool(dcmtk, "storescu", storescu_args(listener_of(intake).port, path))
    assert result.returncode != 0 and "Error: CannotUnderstand" in result.output, result.output
    assert select(intake, instances) == [] and select(intake, studies) == []
    assert [p for p in intake.services.config.storage.path.rglob("*") if p.is_file()] == []
    [row] = await audited(intake, 1, audit_events.c.kind == "dicom.instance")
    assert row.outcome == "rejected" and "Study Instance UID" in row.detail
    assert row.identifiers["sop_instance_uid"] == dataset.SOPInstanceUID


async def test_corrupted_streams_abort_or_refuse_and_the_listener_carries_on(
    dcmtk: Dcmtk, intake: Daemon, tmp_path: Path
) -> None:
    port = listener_of(intake).port
    # 1. A P-DATA-TF PDU whose item length runs past the PDU, inside an established association.
    peer = AE(ae_title="CORRUPT")
    peer.add_requested_context(Verification)
    assoc = peer.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    assoc.dul.socket.send(struct.pack(">BBL", 0x04, 0, 6) + struct.pack(">L", 99) + b"\x01\x03")
    await wait_for(lambda: not assoc.is_established, timeout=10, what="association aborted")
    assert assoc.is_aborted
    # 2. Bytes that are not DICOM at all: answered with an A-ABORT PDU.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.recv(4096)[:1] == b"\x07"
    # 3. A C-STORE request whose data set is garbage.
    status = await asyncio.to_thread(store_raw_data_set, port, b"\x08\x00\x05\x00CS\xff\xff" + b"\xde\xad" * 50)
    assert status == 0xC000
    assert select(intake, instances) == []
    # The listener still serves.
    good = save(mr_dataset(), tmp_path / "good.dcm")
    assert (await run_tool(dcmtk, "storescu", storescu_args(port, good))).returncode == 0
    assert len(select(intake, instances)) == 1
    assert listener_of(intake).health().up


def store_raw_data_set(port: int, data: bytes) -> int:
    """Send a C-STORE-RQ carrying `data` as its data set, bytes as they are; the response status."""
    sender = AE(ae_title="CORRUPT")
    sender.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    assoc = sender.associate("127.0.0.1", port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        request = C_STORE()
        request.MessageID = 1
        request.AffectedSOPClassUID = MRImageStorage
        request.AffectedSOPInstanceUID = new_uid()
        request.Priority = 2
        request.DataSet = BytesIO(data)
        context_id = assoc.accepted_contexts[0].context_id
        # What pynetdicom's send_c_store does first: pause the reactor, so that the response comes to us.
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused:
            time.sleep(0.001)
        try:
            assoc.dimse.send_msg(request, context_id)
            _, response = assoc.dimse.get_msg(block=True)
        finally:
            assoc._reactor_checkpoint.set()
        assert response is not None
        return int(response.Status)
    finally:
        assoc.release()


async def test_out_of_resources_when_the_disk_reserve_is_reached(dcmtk: Dcmtk, tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    daemon = await started(tmp_path, f"[storage]\nmin_free_bytes = {free * 4}\n")
    try:
        path = save(mr_dataset(), tmp_path / "one.dcm")
        result = await run_tool(dcmtk, "storescu", storescu_args(listener_of(daemon).port, path))
        assert result.returncode != 0 and "OutOfResources" in result.output, result.output
        assert select(daemon, instances) == []
        [row] = await audited(daemon, 1, audit_events.c.kind == "dicom.instance")
        assert row.outcome == "rejected" and row.detail.startswith("OUT_OF_RESOURCES")
    finally:
        await stop_daemon(daemon, 5)


async def test_duplicates_refused_when_so_configured(dcmtk: Dcmtk, tmp_path: Path) -> None:
    daemon = await started(tmp_path, '[dicom]\nduplicate_policy = "refuse"\n')
    try:
        path = save(mr_dataset(), tmp_path / "one.dcm")
        port = listener_of(daemon).port
        assert (await run_tool(dcmtk, "storescu", storescu_args(port, path))).returncode == 0
        second = await run_tool(dcmtk, "storescu", storescu_args(port, path))
        # 0x0111 Duplicate SOP Instance (PS3.7 C.4); DCMTK does not name it.
        assert second.returncode != 0 and "status: 0x111" in second.output.lower(), second.output
        assert len(select(daemon, instances)) == 1
    finally:
        await stop_daemon(daemon, 5)


async def test_association_limit_and_pdu_size(dcmtk: Dcmtk, tmp_path: Path) -> None:
    daemon = await started(tmp_path, "[dicom]\nmax_associations = 1\nmax_pdu_bytes = 16384\n")
    try:
        port = listener_of(daemon).port
        holder = AE(ae_title="HOLDER")
        holder.add_requested_context(Verification)
        held = await asyncio.to_thread(holder.associate, "127.0.0.1", port, ae_title=AE_TITLE)
        assert held.is_established
        assert held.acceptor.maximum_length == 16384
        result = await run_tool(dcmtk, "echoscu", echoscu_args(port))
        assert result.returncode != 0 and "local limit exceeded" in result.output.lower(), result.output
        await asyncio.to_thread(held.release)
        await wait_for(lambda: not listener_of(daemon)._server.active_associations, timeout=10,  # type: ignore[union-attr]
                       what="association ended")
        assert (await run_tool(dcmtk, "echoscu", echoscu_args(port))).returncode == 0
    finally:
        await stop_daemon(daemon, 5)


def test_loopback_is_the_default() -> None:
    assert Config().dicom.host == "127.0.0.1"


async def test_listens_on_the_configured_host(intake: Daemon) -> None:
    assert listener_of(intake)._server.server_address[0] == "127.0.0.1"  # type: ignore[union-attr]


# --- TLS -----------------------------------------------------------------------------------------------------------

def make_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return key, cert


async def test_tls_with_client_certificates(dcmtk: Dcmtk, tmp_path: Path) -> None:
    server_key, server_cert = make_certificate(tmp_path, "server")
    client_key, client_cert = make_certificate(tmp_path, "client")
    stranger_key, stranger_cert = make_certificate(tmp_path, "stranger")
    daemon = await started(tmp_path, f'[dicom.tls]\ncert = "{server_cert}"\nkey = "{server_key}"\n'
                                     f'ca = "{client_cert}"\nrequire_client_cert = true\n')
    try:
        port = listener_of(daemon).port
        path = save(mr_dataset(), tmp_path / "one.dcm")
        tls = ["+tls", str(client_key), str(client_cert), "+cf", str(server_cert)]
        # A client that connects and never starts its handshake does not hold up the others.
        silent = socket.create_connection(("127.0.0.1", port))
        result = await run_tool(dcmtk, "storescu", [*tls, *storescu_args(port, path)])
        silent.close()
        assert result.returncode == 0, result.output
        assert len(select(daemon, instances)) == 1
        untrusted = ["+tls", str(stranger_key), str(stranger_cert), "+cf", str(server_cert)]
        assert (await run_tool(dcmtk, "echoscu", [*untrusted, *echoscu_args(port)])).returncode != 0
        assert (await run_tool(dcmtk, "echoscu", echoscu_args(port))).returncode != 0  # plain TCP
        assert listener_of(daemon).health().up
    finally:
        await stop_daemon(daemon, 5)


# --- what the logs may say -----------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
async def test_logs_carry_uids_and_never_patient_data(dcmtk: Dcmtk, intake: Daemon, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="neurolabel")
    dataset = mr_dataset(patient_id="SECRET-ID-42")
    dataset.PatientName = "Secretname^Jane"
    good = save(dataset, tmp_path / "good.dcm")
    bad = mr_dataset(patient_id="SECRET-ID-42")
    bad.PatientName = "Secretname^Jane"
    bad.SeriesInstanceUID = "1.2.x"
    bad_path = save(bad, tmp_path / "bad.dcm")
    await run_tool(dcmtk, "storescu", storescu_args(listener_of(intake).port, good, bad_path))
    text = caplog.text
    assert dataset.SOPInstanceUID in text and bad.SOPInstanceUID in text
    assert "SECRET-ID-42" not in text and "Secretname" not in text
    audit = await audited(intake, 2, audit_events.c.kind == "dicom.instance")
    assert "SECRET-ID-42" not in str([(row.identifiers, row.detail) for row in audit])
    assert "Secretname" not in str([(row.identifiers, row.detail) for row in audit])


async def test_received_time_and_peer_are_indexed(dcmtk: Dcmtk, intake: Daemon, tmp_path: Path) -> None:
    before = dt.datetime.now(dt.timezone.utc)
    path = save(mr_dataset(), tmp_path / "one.dcm")
    assert (await run_tool(dcmtk, "storescu", storescu_args(listener_of(intake).port, path))).returncode == 0
    [row] = select(intake, instances)
    assert before <= row.received_at <= dt.datetime.now(dt.timezone.utc)
    assert (row.calling_ae_title, row.peer) == ("MODALITY", "127.0.0.1")
