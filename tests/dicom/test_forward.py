"""C-STORE SCU: a response that pynetdicom's reactor thread takes still reaches the request (real Orthanc)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pynetdicom import AE
from pynetdicom.association import Association

from daemon.dicom.forward import keep_responses
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
