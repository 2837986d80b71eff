"""DICOM upper layer by hand: PDUs as bytes on a raw socket, so that they can be wrong on purpose.

`RawAssociation` opens a socket, sends a real A-ASSOCIATE-RQ (encoded by pynetdicom), reads the answer,
and then sends whatever bytes a test wants: C-STORE requests whose data set is any byte string, P-DATA-TF
PDUs with lengths that lie, unknown PDU types. `answer()` reads what the daemon sends back: a C-STORE
response status, an A-ABORT, or the connection closing.
"""

from __future__ import annotations

import io
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.transport import AddressInformation
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA = 0x04
A_RELEASE_RQ = 0x05
A_ABORT = 0x07
CONTEXT_ID = 1
_HEADER = struct.Struct(">BBL")


def associate_rq(calling: str = "FUZZER", called: str = "NEUROLABEL", max_pdu: int = 16384) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    primitive.calling_presentation_address = AddressInformation("127.0.0.1", 0)
    primitive.called_presentation_address = AddressInformation("127.0.0.1", 0)
    context = build_context(MRImageStorage, [ExplicitVRLittleEndian])
    context.context_id = CONTEXT_ID
    primitive.presentation_context_definition_list = [context]
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = max_pdu
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    primitive.user_information = [maximum, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def store_pdus(dataset_bytes: bytes, sop_instance_uid: str, *, sop_class_uid: str = str(MRImageStorage),
               max_pdu: int = 16384, message_id: int = 1) -> list[bytes]:
    """The P-DATA-TF PDUs of a C-STORE-RQ carrying `dataset_bytes` as its data set, whatever they are."""
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = sop_class_uid
    primitive.AffectedSOPInstanceUID = sop_instance_uid
    primitive.Priority = 0x0002
    primitive.DataSet = io.BytesIO(dataset_bytes)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    pdus = []
    for p_data in message.encode_msg(CONTEXT_ID, max_pdu):
        encoded = P_DATA_TF()
        encoded.from_primitive(p_data)
        pdus.append(bytes(encoded.encode()))
    if not dataset_bytes:  # the command announces a data set: send it, empty
        pdus.append(pdu(P_DATA, pdv(CONTEXT_ID, 0x02, b"")))
    return pdus


def encode_dataset(dataset: Dataset, *, little_endian: bool = True) -> bytes:
    """Explicit VR (little endian unless asked), no file meta: what travels in a C-STORE."""
    encoded = encode(dataset, False, little_endian)
    assert encoded is not None
    return encoded


def pdu(pdu_type: int, body: bytes, length: int | None = None) -> bytes:
    return _HEADER.pack(pdu_type, 0, len(body) if length is None else length) + body


def pdv(context_id: int, control: int, data: bytes, length: int | None = None) -> bytes:
    """One presentation data value item (PS3.8 9.3.5.1); `length` may lie."""
    return struct.pack(">LBB", len(data) + 2 if length is None else length, context_id, control) + data


@dataclass(frozen=True)
class Answer:
    """What came back: a PDU type and body, or closed=True."""

    pdu_type: int | None
    body: bytes = b""
    closed: bool = False

    @property
    def aborted_or_closed(self) -> bool:
        return self.closed or self.pdu_type == A_ABORT


class RawAssociation:
    def __init__(self, port: int, timeout: float = 20.0) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout

    def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    def answer(self) -> Answer:
        """The next PDU from the daemon; closed=True if it closed the connection; neither if it stayed silent
        for the socket's timeout."""
        try:
            header = self._read(6)
            if header is None:
                return Answer(None, closed=True)
            pdu_type, _, length = _HEADER.unpack(header)
            body = self._read(length)
            return Answer(pdu_type, body or b"")
        except TimeoutError:
            return Answer(None)
        except OSError:
            return Answer(None, closed=True)

    def associate(self, calling: str = "FUZZER") -> Answer:
        self.send(associate_rq(calling))
        return self.answer()

    def store_status(self) -> int | None:
        """The Status of the C-STORE response, reassembling its command fragments; None if aborted or closed."""
        command = b""
        while True:
            answer = self.answer()
            if answer.pdu_type != P_DATA:
                return None
            for control, data in _values(answer.body):
                command += data
                if control & 0x02:  # last fragment of the command set
                    status = decode(io.BytesIO(command), True, True).Status
                    return int(status)

    def closed_within(self, seconds: float) -> bool:
        """True if the daemon aborts or closes the connection within `seconds`."""
        deadline = time.monotonic() + seconds
        self.socket.settimeout(0.5)
        while time.monotonic() < deadline:
            answer = self.answer()
            if answer.aborted_or_closed:
                return True
        return False

    def close(self) -> None:
        try:
            self.socket.close()
        except OSError:
            pass

    def _read(self, count: int) -> bytes | None:
        data = bytearray()
        while len(data) < count:
            chunk = self.socket.recv(min(count - len(data), 65536))
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def __enter__(self) -> RawAssociation:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _values(body: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + 6 <= len(body):
        (length,) = struct.unpack_from(">L", body, offset)
        yield body[offset + 5], body[offset + 6: offset + 4 + length]
        offset += 4 + length
