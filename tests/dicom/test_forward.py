"""C-STORE SCU: a response that pynetdicom's reactor thread takes still reaches the request (real Orthanc)."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE
from pynetdicom.association import Association

from daemon.config import AeAddress
from daemon.dicom.forward import ForwardError, SendOutcome, keep_responses, send_groups
from tests.peers.orthanc import OrthancServer, orthanc, orthanc_server  # noqa: F401  (fixtures)


def steal_next_response(assoc: Association) -> None:
    """Make the association lose the race of pynetdicom issue 850 on its next request: once the response is
    decoded, it is taken off the DIMSE queue and handed to the reactor's `_serve_request`, as the reactor does
    when it slips past the pause handshake."""
    send = assoc.dimse.send_msg

    def send_then_steal(primitive: Any, context_id: int) -> None:
        send(primitive, context_id)
        deadline = time.monotonic() + 10
        while assoc.dimse.msg_queue.empty():
            if time.monotonic() > deadline:
                raise AssertionError("no response from the peer")
            time.sleep(0.001)
        context, message = assoc.dimse.msg_queue.get()
        assoc._serve_request(message, context)

    assoc.dimse.send_msg = send_then_steal  # type: ignore[method-assign]


def associate(server: OrthancServer, path: Path) -> Association:
    dataset = pydicom.dcmread(path)
    ae = AE(ae_title="NEUROLABEL")
    ae.dimse_timeout = 3  # what a lost response costs without the fix (30 s in the daemon)
    ae.add_requested_context(str(dataset.SOPClassUID), [str(dataset.file_meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title=server.aet)
    assert assoc.is_established
    return assoc


@pytest.mark.parametrize("fixed", [True, False])
def test_a_response_the_reactor_took_reaches_the_request(
    orthanc: OrthancServer, fixed: bool  # noqa: F811
) -> None:
    path = Path(get_testdata_file("MR_small.dcm"))
    assoc = associate(orthanc, path)
    try:
        if fixed:
            keep_responses(assoc)
        steal_next_response(assoc)
        started = time.monotonic()
        status = assoc.send_c_store(path)
        elapsed = time.monotonic() - started
    finally:
        assoc.release()
    if fixed:
        assert status.Status == 0x0000 and elapsed < 3
    else:  # the race as pynetdicom has it: the response is dropped and the request times out
        assert "Status" not in status


def test_groups_share_an_association_and_fail_alone(orthanc: OrthancServer, tmp_path: Path) -> None:  # noqa: F811
    """Three studies in one call: the one Orthanc cannot take fails by itself, the others arrive."""
    paths = []
    for index, sop_class in enumerate(("", "1.2.826.0.1.3680043.8.498.999", "")):
        dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        dataset.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.77.{index}"
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.8.498.78.{index}"
        if sop_class:  # a SOP class Orthanc does not accept
            dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = sop_class
        paths.append(tmp_path / f"{index}.dcm")
        dataset.save_as(paths[-1])
    datasets = [pydicom.dcmread(path) for path in paths]
    groups = [[(path, str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID))] for path, d in zip(paths, datasets)]
    destination = AeAddress(orthanc.aet, "127.0.0.1", orthanc.dicom_port)
    first, rejected, last = send_groups(groups, destination, calling_ae_title="NEUROLABEL", timeout_seconds=10)
    assert first == SendOutcome(1, 0) and last == SendOutcome(1, 0)
    assert isinstance(rejected, ForwardError) and "does not accept" in str(rejected)
    assert len(orthanc.find("Study")) == 2


def test_an_unreachable_destination_fails_every_group() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = int(probe.getsockname()[1])
    path = Path(get_testdata_file("MR_small.dcm"))
    files = [(path, "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.1")]
    outcomes = send_groups([files, files], AeAddress("NOBODY", "127.0.0.1", closed), calling_ae_title="NEUROLABEL",
                           timeout_seconds=2)
    assert all(isinstance(outcome, ForwardError) and "association" in str(outcome) for outcome in outcomes)
