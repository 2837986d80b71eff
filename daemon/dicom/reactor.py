"""Event-driven reactors for pynetdicom 3.0 acceptors.

pynetdicom's two threads per association poll: the upper-layer thread sleeps
1 ms whenever it has nothing to do, and the association thread sleeps 1 ms
before each look at its message queue. A C-STORE on one association waits for
both (the request reaches the handler a poll late, the response reaches the
socket a poll late), reads each PDU in 4 KB pieces and copies the payload
several times. On this hardware that is most of the time a small object takes.

The subclasses here keep pynetdicom's state machine, negotiation and service
classes and change only how the threads wait and how a P-DATA-TF PDU is read:

- the upper layer waits in select() on its socket and a wake-up pipe that is
  written whenever another thread queues a primitive for it;
- the association thread waits on a condition that the upper layer signals
  when it queues a DIMSE message or an A-RELEASE/A-ABORT indication;
- a P-DATA-TF PDU is read with one recv_into() into a buffer of its length,
  and its presentation data values are handed on as memoryviews, not copies
  (EVT_PDU_RECV and EVT_DATA_RECV are not triggered for P-DATA-TF PDUs);
  during data transfer they go to DIMSE at once, as the state machine's
  DT-2 would, without its queues;
- a C-STORE request whose command set comes in one fragment is decoded
  directly (a handful of known elements read with struct), not through
  pydicom; anything else goes through pynetdicom;
- a plain C-STORE response is encoded directly, not through pydicom, and
  sent by the association thread itself on a plain (non-TLS) socket during
  data transfer, without waking the upper layer to send it;
- pynetdicom's debug loggers of every PDU and DIMSE message are unbound.

They rely on pynetdicom internals, so `acceptor_server_class()` uses them only
with the pynetdicom version they were written for and falls back to the stock
server otherwise.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import pynetdicom
from pynetdicom import _config, _handlers, evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

log = logging.getLogger("neurolabel.dicom.reactor")

SUPPORTED_PYNETDICOM = ("3.0.",)
# Longest wait between looks at timers and flags when nothing wakes a thread.
IDLE_WAIT_SECONDS = 0.05
_PDU_HEADER = struct.Struct(">BBL")
_PDV_LENGTH = struct.Struct(">L")
_PDV_HEADER = struct.Struct(">LB")
_P_DATA_TF = 0x04
_A_ASSOCIATE_RQ = 0x01
_PROTOCOL_VERSION = b"\x00\x01"
# Data transfer, and awaiting the local A-RELEASE response (PS3.8 9.2): sending P-DATA keeps the state
_SENDING_DATA = ("Sta6", "Sta8")
# Idle, or transport connection open and awaiting A-ASSOCIATE-RQ (PS3.8 9.2)
_AWAITING_REQUEST = ("Sta1", "Sta2")
_KNOWN_PDU_TYPES = frozenset(range(0x01, 0x08))
# Attribute of an association naming the first protocol error its peer made (read by the SCP's audit).
PROTOCOL_ERROR = "neurolabel_protocol_error"
# Longest association request, release or abort PDU accepted (a real A-ASSOCIATE-RQ is a few kB).
MAX_CONTROL_PDU_BYTES = 1 << 20
# Longest P-DATA-TF when we announced no maximum length (max_pdu_bytes = 0).
MAX_UNLIMITED_P_DATA_BYTES = 64 << 20
_ACCEPTOR = "acceptor"


def acceptor_server_class() -> type[ThreadedAssociationServer]:
    """The server class to pass to `AE.make_server`: ours when this pynetdicom is supported, else the stock one."""
    if pynetdicom.__version__.startswith(SUPPORTED_PYNETDICOM):
        return EventDrivenServer
    log.warning("pynetdicom %s is not one the event-driven reactors support; using its polling reactors",
                pynetdicom.__version__)
    return ThreadedAssociationServer


class _Doorbell:
    """A level-triggered wake-up for one waiting thread."""

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._rung = False

    def ring(self) -> None:
        with self._condition:
            self._rung = True
            self._condition.notify()

    def wait(self, timeout: float) -> None:
        with self._condition:
            if not self._rung:
                self._condition.wait(timeout)
            self._rung = False


class _NotifyingQueue(queue.Queue):  # type: ignore[type-arg]
    """A queue that calls `notify` after each put."""

    def __init__(self, notify: Callable[[], None]) -> None:
        super().__init__()
        self._notify = notify

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._notify()


class _ReceivedPData:
    """Stands in for a decoded P_DATA_TF PDU in the upper layer's receive queue (DT-2 asks it for its primitive)."""

    __slots__ = ("_primitive",)

    def __init__(self, primitive: P_DATA) -> None:
        self._primitive = primitive

    def to_primitive(self) -> P_DATA:
        return self._primitive


def decode_p_data(body: bytearray) -> P_DATA:
    """A P-DATA primitive whose presentation data values are views into `body` (PS3.8 section 9.3.5).

    ValueError when an item's length does not fit the PDU.
    """
    view = memoryview(body)
    values: list[tuple[int, memoryview]] = []
    offset = 0
    end = len(body)
    while offset < end:
        if offset + 6 > end:
            raise ValueError("truncated presentation data value item")
        (item_length,) = _PDV_LENGTH.unpack_from(body, offset)
        if item_length < 2 or offset + 4 + item_length > end:
            raise ValueError("presentation data value item length does not fit the PDU")
        values.append((body[offset + 4], view[offset + 5 : offset + 4 + item_length]))
        offset += 4 + item_length
    if not values:
        raise ValueError("P-DATA-TF PDU without presentation data values")
    primitive = P_DATA()
    # The property setter insists on bytes; decode_msg only indexes and slices, which a memoryview does too.
    primitive._presentation_data_value_list = values  # type: ignore[assignment]
    return primitive


class EventDrivenSocket(AssociationSocket):
    """Reads a requested length with recv_into() instead of 4 KB recv() calls."""

    def recv(self, nr_bytes: int) -> bytearray:
        connection = self.socket
        assert connection is not None
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        received = 0
        try:
            while received < nr_bytes:
                count = connection.recv_into(view[received:], nr_bytes - received)
                if count == 0:
                    break
                received += count
        finally:
            view.release()
        if received < nr_bytes:
            del buffer[received:]
        return buffer


class _PeerError(Exception):
    """What the peer sent cannot be processed: the association is aborted and the reason audited."""


class EventDrivenDUL(DULServiceProvider):
    """The upper layer, waiting in select() on its socket and a wake-up pipe instead of sleeping."""

    def __init__(self, assoc: Association, on_user_primitive: Callable[[], None]) -> None:
        super().__init__(assoc)
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self.to_provider_queue = _NotifyingQueue(self._wake)
        self.event_queue = _NotifyingQueue(self._wake)
        self.to_user_queue = _NotifyingQueue(on_user_primitive)

    def _wake(self) -> None:
        if threading.get_ident() == self.ident:
            return  # the upper layer itself queued it; it looks again before it waits
        try:
            os.write(self._wake_write, b"\x00")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (already awake) or closed (finished)

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def run_reactor(self) -> None:
        try:
            self._event_loop()
        finally:
            os.close(self._wake_read)
            os.close(self._wake_write)
            if self.assoc.requestor.primitive is None:
                # The connection ended before an A-ASSOCIATE-RQ (garbage, a port scan): the association
                # thread waits for one for acse_timeout; None is what it gets on that timeout, so it ends now.
                self.to_user_queue.put(None)

    def _event_loop(self) -> None:
        self._idle_timer.start()
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if idle:
                self._wait_for_activity()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except _PeerError as exc:
                self._note_protocol_error(str(exc))
                self._abort_now()
                return
            except Exception:
                log.exception("upper layer failed; aborting the association")
                self._abort_now()
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            try:
                self.state_machine.do_action(event)
            except Exception as exc:  # pynetdicom could not handle what the peer sent (e.g. a garbage command set)
                # It has logged the error and stopped this upper layer already: abort the association.
                self._note_protocol_error(f"cannot process {event} ({type(exc).__name__})")
                self._abort_now()
                return
            idle = False

    def _wait_for_activity(self) -> None:
        wait_on = [self._wake_read]
        connection = self.socket.socket if self.socket is not None else None
        if connection is not None and connection.fileno() >= 0:
            pending = getattr(connection, "pending", None)
            if pending is not None and pending():
                return  # TLS has decrypted bytes buffered that select() cannot see
            wait_on.append(connection)  # type: ignore[arg-type]
        try:
            ready, _, _ = select.select(wait_on, [], [], IDLE_WAIT_SECONDS)
        except (OSError, ValueError):
            time.sleep(self._run_loop_delay)  # the socket closed under us; the next pass notices
            return
        if self._wake_read in ready:
            try:
                while os.read(self._wake_read, 512):
                    pass
            except BlockingIOError:
                pass

    def send_p_data_now(self, context_id: int, value: bytes) -> bool:
        """From the association thread: send a P-DATA-TF of one value at once, as DT-1 / AR-7 would, when that is
        safe; False (nothing sent) otherwise, and the caller queues it for this upper layer as usual.

        Safe means: data transfer (Sta6) or a release the peer asked for (Sta8), in both of which sending P-DATA
        leaves the state unchanged; nothing queued for this layer to send before it; a plain socket (an SSL object
        must not read and write in two threads at once); no EVT_PDU_SENT handler to call.
        """
        connection = self.socket
        if (
            connection is None
            or not isinstance(connection.socket, socket.socket)
            or isinstance(connection.socket, ssl.SSLSocket)
            or self.to_provider_queue.queue
            or self.state_machine.current_state not in _SENDING_DATA
            or self.assoc.get_handlers(evt.EVT_PDU_SENT)
        ):
            return False
        connection.send(encode_p_data_tf(context_id, value))  # a failure puts Evt17 for this layer, as its own
        return True

    def _abort_now(self) -> None:
        """What pynetdicom does on an internal error: send A-ABORT, bypassing the state machine, and stop."""
        abort = A_ABORT_RQ()
        abort.source = 0x02
        abort.reason_diagnostic = 0x00
        try:
            if self.socket is not None:
                self.socket.send(abort.encode())
        finally:
            assoc = self.assoc
            was_established = assoc.is_established
            assoc.is_aborted = True
            assoc.is_established = False
            assoc._kill = True
            self._kill_thread = True
            if isinstance(assoc, EventDrivenAssociation):
                assoc.wake()
            if was_established:
                evt.trigger(assoc, evt.EVT_ABORTED, {})  # as pynetdicom's own Association.abort() does

    def _read_pdu_data(self) -> None:
        """Read one PDU; P-DATA-TF is decoded here without copies, other PDUs by pynetdicom."""
        connection = self.socket
        assert connection is not None
        try:
            header = connection.recv(6)
            if len(header) < 6:
                self.event_queue.put("Evt17")  # closed
                return
            pdu_type, _, length = _PDU_HEADER.unpack(header)
            if pdu_type not in _KNOWN_PDU_TYPES:
                self._protocol_error(f"unknown PDU type 0x{pdu_type:02X}")
                return
            if pdu_type != _A_ASSOCIATE_RQ and self.state_machine.current_state in _AWAITING_REQUEST:
                # pynetdicom aborts this itself; noted so that it is audited
                self._note_protocol_error(f"PDU of type 0x{pdu_type:02X} before an association request")
            limit = self._largest_pdu(pdu_type)
            if length > limit:
                # Checked before reading: the body is read into a buffer of the announced length, and a
                # 10-byte header announcing 4 GB must not make us allocate 4 GB (found by tests/reliability).
                self._protocol_error(
                    f"PDU of type 0x{pdu_type:02X} announces {length} bytes, more than the {limit} accepted"
                )
                return
            body = connection.recv(length)
        except (OSError, TimeoutError):
            self.event_queue.put("Evt17")
            return
        if len(body) != length:
            self._note_protocol_error(f"connection closed inside a PDU ({len(body)} of {length} bytes)")
            self.event_queue.put("Evt17")
            return
        if pdu_type == _P_DATA_TF:
            try:
                primitive = decode_p_data(body)
            except ValueError as exc:
                self._protocol_error(f"invalid P-DATA-TF PDU: {exc}")
                return
            if self._can_transfer_directly():
                # DT-2 (Sta6 + Evt10 -> Sta6), without the state machine's queues and dispatch
                try:
                    self.assoc.dimse.receive_primitive(primitive)
                except Exception as exc:  # what pynetdicom cannot decode (e.g. a garbage command set)
                    raise _PeerError(f"cannot process Evt10 ({type(exc).__name__})") from exc
                return
            self._recv_pdu.put(_ReceivedPData(primitive))
            self.event_queue.put("Evt10")
            return
        if pdu_type == _A_ASSOCIATE_RQ and body[:2] != _PROTOCOL_VERSION:
            # pynetdicom rejects this itself; noted so that it is audited
            self._note_protocol_error(f"protocol version 0x{bytes(body[:2]).hex()} is not 0x0001")
        try:
            pdu, event = self._decode_pdu(header + body)
        except Exception as exc:  # the message may quote what the peer sent: only its type is logged
            self._protocol_error(f"cannot decode a PDU of type 0x{pdu_type:02X} ({type(exc).__name__})")
            return
        self._recv_pdu.put(pdu)
        self.event_queue.put(event)

    def _can_transfer_directly(self) -> bool:
        """Whether a P-DATA-TF may go to DIMSE at once: data transfer (Sta6), nothing queued before it, and no
        EVT_FSM_TRANSITION handler that would miss the transition."""
        return (
            self.state_machine.current_state == "Sta6"
            and not self.event_queue.queue
            and not self._recv_pdu.queue
            and not self.assoc.get_handlers(evt.EVT_FSM_TRANSITION)
        )

    def _protocol_error(self, reason: str) -> None:
        """The peer broke the upper layer protocol: note why, and let the state machine abort (Evt19)."""
        self._note_protocol_error(reason)
        self.event_queue.put("Evt19")

    def _note_protocol_error(self, reason: str) -> None:
        address = self.assoc.requestor.address or "?"
        log.warning("protocol error from %s: %s", address, reason)
        if getattr(self.assoc, PROTOCOL_ERROR, None) is None:
            setattr(self.assoc, PROTOCOL_ERROR, reason)  # audited when the connection closes (daemon/dicom/scp.py)

    def _largest_pdu(self, pdu_type: int) -> int:
        """The longest PDU body accepted: P-DATA-TF up to the Maximum Length we announced, others up to a bound
        far above any real association request."""
        if pdu_type != _P_DATA_TF:
            return MAX_CONTROL_PDU_BYTES
        return int(self.assoc.acceptor.maximum_length or 0) or MAX_UNLIMITED_P_DATA_BYTES


def encode_p_data_tf(context_id: int, value: bytes) -> bytes:
    """A P-DATA-TF PDU of one presentation data value (`value` starts with its message control header)."""
    return _PDU_HEADER.pack(_P_DATA_TF, 0, len(value) + 5) + _PDV_HEADER.pack(len(value) + 1, context_id) + value


def encode_c_store_response(
    message_id: int, sop_class_uid: str, sop_instance_uid: str, status: int
) -> bytes:
    """A C-STORE-RSP command set without optional status elements (PS3.7 9.3.1.2), implicit VR little endian."""
    body = b"".join((
        _command_element(0x0002, _uid_bytes(sop_class_uid)),
        _command_element(0x0100, struct.pack("<H", _C_STORE_RSP)),
        _command_element(0x0120, struct.pack("<H", message_id)),
        _command_element(0x0800, struct.pack("<H", _NO_DATA_SET)),
        _command_element(0x0900, struct.pack("<H", status)),
        _command_element(0x1000, _uid_bytes(sop_instance_uid)),
    ))
    return _command_element(0x0000, struct.pack("<L", len(body))) + body


_C_STORE_RQ = 0x0001
_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101
_LAST_COMMAND_FRAGMENT = b"\x03"
_COMMAND_ELEMENT = struct.Struct("<HHL")
_US = struct.Struct("<H")
# The elements a C-STORE-RQ command set may hold (PS3.7 9.3.1.1), implicit VR little endian.
_GROUP_LENGTH, _SOP_CLASS, _COMMAND_FIELD, _MESSAGE_ID, _PRIORITY, _DATA_SET_TYPE = 0x0000, 0x0002, 0x0100, 0x0110, 0x0700, 0x0800
_SOP_INSTANCE, _MOVE_ORIGINATOR_AE, _MOVE_ORIGINATOR_ID = 0x1000, 0x1030, 0x1031
_C_STORE_RQ_ELEMENTS = frozenset((_GROUP_LENGTH, _SOP_CLASS, _COMMAND_FIELD, _MESSAGE_ID, _PRIORITY, _DATA_SET_TYPE,
                                  _SOP_INSTANCE, _MOVE_ORIGINATOR_AE, _MOVE_ORIGINATOR_ID))
_US_ELEMENTS = frozenset((_COMMAND_FIELD, _MESSAGE_ID, _PRIORITY, _DATA_SET_TYPE, _MOVE_ORIGINATOR_ID))
_REQUIRED_ELEMENTS = frozenset((_SOP_CLASS, _COMMAND_FIELD, _MESSAGE_ID, _PRIORITY, _DATA_SET_TYPE, _SOP_INSTANCE))


@dataclass(frozen=True)
class StoreCommand:
    """The command set of a C-STORE request with a data set."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    priority: int
    move_originator_ae: str | None
    move_originator_id: int | None


def parse_c_store_request(command: bytes | memoryview) -> StoreCommand | None:
    """The command set `command` (implicit VR little endian) if it is a plain C-STORE-RQ with a data set.

    None for anything else (another command, an element a C-STORE-RQ does not have, a multi-valued or oddly
    sized value, a truncated set): pynetdicom then decodes it as usual.
    """
    values: dict[int, bytes] = {}
    offset, end = 0, len(command)
    while offset < end:
        if offset + 8 > end:
            return None
        group, element, length = _COMMAND_ELEMENT.unpack_from(command, offset)
        offset += 8
        if group != 0x0000 or element not in _C_STORE_RQ_ELEMENTS or element in values or offset + length > end:
            return None
        values[element] = bytes(command[offset : offset + length])
        offset += length
    if not _REQUIRED_ELEMENTS <= values.keys():
        return None
    if any(len(values[element]) != 2 for element in _US_ELEMENTS if element in values):
        return None
    number = {element: _US.unpack(values[element])[0] for element in _US_ELEMENTS if element in values}
    if number[_COMMAND_FIELD] != _C_STORE_RQ or number[_DATA_SET_TYPE] == _NO_DATA_SET:
        return None
    # As pydicom decodes them: UIDs without trailing nulls and spaces, an AE title without surrounding spaces.
    text = {element: values[element] for element in (_SOP_CLASS, _SOP_INSTANCE, _MOVE_ORIGINATOR_AE) if element in values}
    if any(b"\\" in value or not value.isascii() for value in text.values()):
        return None  # multi-valued, or not ASCII: pynetdicom decides
    move_ae = text[_MOVE_ORIGINATOR_AE].decode("ascii").strip() if _MOVE_ORIGINATOR_AE in text else None
    return StoreCommand(
        message_id=number[_MESSAGE_ID],
        sop_class_uid=text[_SOP_CLASS].decode("ascii").rstrip("\0 "),
        sop_instance_uid=text[_SOP_INSTANCE].decode("ascii").rstrip("\0 "),
        priority=number[_PRIORITY],
        move_originator_ae=move_ae or None,
        move_originator_id=number.get(_MOVE_ORIGINATOR_ID),
    )


class _StoreAssembly:
    """A C-STORE request being received: its command, its context and the data set fragments so far."""

    __slots__ = ("command", "context_id", "data")

    def __init__(self, command: StoreCommand, context_id: int) -> None:
        self.command = command
        self.context_id = context_id
        self.data = BytesIO()

    def to_primitive(self) -> C_STORE:
        primitive = C_STORE()
        command = self.command
        primitive.MessageID = command.message_id
        primitive.AffectedSOPClassUID = command.sop_class_uid
        primitive.AffectedSOPInstanceUID = command.sop_instance_uid
        primitive.Priority = command.priority
        if command.move_originator_ae is not None:
            primitive.MoveOriginatorApplicationEntityTitle = command.move_originator_ae
        if command.move_originator_id is not None:
            primitive.MoveOriginatorMessageID = command.move_originator_id
        primitive.DataSet = self.data
        primitive._context_id = self.context_id
        return primitive


def _command_element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0x0000, element, len(value)) + value


def _uid_bytes(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


class _DirectResponses(DIMSEServiceProvider):
    """Receives plain C-STORE requests and sends plain C-STORE responses without pydicom.

    pynetdicom decodes each request's command set into a pydicom data set and
    copies its elements one by one into the primitive, and builds each response
    as a pydicom data set that it encodes twice (once for the group length);
    for a small object that is a sizeable part of the time a C-STORE takes.
    A C-STORE-RQ whose command set arrives in one fragment is parsed here
    (parse_c_store_request) and its data set fragments collected as pynetdicom
    would; a plain C-STORE-RSP (no error comment or offending element) is
    encoded here. Anything else, or anything while an EVT_DIMSE_RECV /
    EVT_DIMSE_SENT handler is bound, goes through pynetdicom.
    """

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._store: _StoreAssembly | None = None

    def receive_primitive(self, primitive: P_DATA) -> None:
        values = primitive.presentation_data_value_list
        if len(values) > 1:
            for value in values:  # one at a time: each may start or end a message
                single = P_DATA()
                single._presentation_data_value_list = [value]  # type: ignore[assignment]
                self.receive_primitive(single)
            return
        [(context_id, data)] = values
        store = self._store
        if store is not None:
            if data[0] & 1:  # a command fragment inside a data set: what pynetdicom would fail to decode
                self._abort("command fragment inside a C-STORE data set")
                return
            store.data.write(data[1:])
            if data[0] & 2:
                self._store = None
                try:
                    request = store.to_primitive()
                except Exception as exc:  # a value the primitive refuses: what pynetdicom does with an invalid message
                    self._abort(f"invalid C-STORE request ({type(exc).__name__})")
                    return
                self.msg_queue.put((store.context_id, request))
            return
        if self.message is None and data[0] & 3 == 3 and self._fast_path():
            command = parse_c_store_request(data[1:])
            if command is not None:
                self._store = _StoreAssembly(command, context_id)
                return
        super().receive_primitive(primitive)

    def _abort(self, reason: str) -> None:
        """The peer broke the protocol: the upper layer notes why (logged and audited, no traceback) and aborts."""
        self._store = None
        if isinstance(self.dul, EventDrivenDUL):
            self.dul._protocol_error(reason)
        else:
            self.dul.event_queue.put("Evt19")

    def _fast_path(self) -> bool:
        return not _config.STORE_RECV_CHUNKED_DATASET and not self.assoc.get_handlers(evt.EVT_DIMSE_RECV)

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if (
            isinstance(primitive, C_STORE)
            and primitive.MessageIDBeingRespondedTo is not None
            and primitive.ErrorComment is None
            and primitive.OffendingElement is None
            and primitive.AffectedSOPClassUID
            and primitive.AffectedSOPInstanceUID
            and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT)
        ):
            command = encode_c_store_response(
                primitive.MessageIDBeingRespondedTo, primitive.AffectedSOPClassUID,
                primitive.AffectedSOPInstanceUID, primitive.Status,
            )
            fragment = _LAST_COMMAND_FRAGMENT + command
            dul = self.dul
            if isinstance(dul, EventDrivenDUL) and dul.send_p_data_now(context_id, fragment):
                return
            data = P_DATA()
            data.presentation_data_value_list = [[context_id, fragment]]  # type: ignore[list-item]
            dul.send_pdu(data)
            return
        super().send_msg(primitive, context_id)


class EventDrivenAssociation(Association):
    """An acceptor whose thread sleeps until a message, an indication or a stop arrives."""

    def __init__(self, ae: Any, mode: str) -> None:
        super().__init__(ae, mode)
        self._doorbell = _Doorbell()
        self.dul = EventDrivenDUL(self, self._doorbell.ring)
        # The timeouts live on the upper layer's timers: apply them to the new one.
        self.acse_timeout = ae.acse_timeout
        self.network_timeout = ae.network_timeout
        self.dimse = _DirectResponses(self)
        self.dimse.msg_queue = _NotifyingQueue(self._doorbell.ring)
        for event, handler in _PER_MESSAGE_LOGGERS:
            if handler in [bound for bound, _ in self.get_handlers(event)]:  # type: ignore[misc]
                self.unbind(event, handler)

    def wake(self) -> None:
        self._doorbell.ring()

    def kill(self) -> None:
        self._kill = True
        self._doorbell.ring()
        super().kill()

    def _run_reactor(self) -> None:
        """pynetdicom's acceptor loop (serve messages; handle release, abort, upper-layer exit and idle timeout)."""
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            try:
                context_id, message = self.dimse.msg_queue.get(block=False)
            except queue.Empty:
                message = None
            if message is not None:
                self._serve_request(message, context_id)
                continue

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                log.warning("network timeout reached; aborting the association")
                self.abort()
                self.kill()
                return

            self._doorbell.wait(IDLE_WAIT_SECONDS)


class EventDrivenRequestHandler(RequestHandler):
    """Creates our association classes for each connection; shares the server's contexts instead of copying them.

    Negotiation only reads the acceptor's supported contexts (it builds new
    result contexts), so one list serves every association. A TLS handshake
    happens here, in the connection's own thread (see EventDrivenServer).
    """

    def handle(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            try:
                self.request.settimeout(self.ae.acse_timeout)
                self.request.do_handshake()
                self.request.settimeout(None)
            except (OSError, ValueError) as exc:
                log.warning("TLS handshake with %s failed: %s", self.client_address[0], exc)
                self.server.shutdown_request(self.request)
                return
        super().handle()

    def _create_association(self) -> Association:
        assoc = EventDrivenAssociation(self.ae, _ACCEPTOR)
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{self.client_address[0]}:{self.client_address[1]}"
        assoc.set_socket(EventDrivenSocket(assoc, client_socket=self.request))
        acceptor = assoc.acceptor
        acceptor.maximum_length = self.ae.maximum_pdu_size
        acceptor.ae_title = self.server.ae_title
        acceptor.address_info = self.local
        acceptor.implementation_class_uid = self.ae.implementation_class_uid
        acceptor.implementation_version_name = self.ae.implementation_version_name
        acceptor.supported_contexts = self.server.contexts
        assoc.requestor.address_info = self.remote
        for event, bound in self.server._handlers.items():
            if event.is_intervention and bound:
                assoc.bind(event, *bound)
            elif isinstance(event, evt.NotificationEvent):
                for handler, arguments in bound:  # type: ignore[misc]
                    assoc.bind(event, handler, arguments)
        return assoc


class EventDrivenServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the event-driven request handler.

    It also unbinds pynetdicom's debug loggers of every PDU and DIMSE message:
    they format each message under the AE-wide lock even when debug logging
    is off, serialising concurrent associations.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["request_handler"] = EventDrivenRequestHandler
        super().__init__(*args, **kwargs)
        for event, handler in _PER_MESSAGE_LOGGERS:
            if handler in [bound for bound, _ in self.get_handlers(event)]:  # type: ignore[misc]
                self.unbind(event, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept; with TLS, wrap without the handshake, which the connection's thread does (a slow or silent
        client must not stall the accept loop, where pynetdicom would do it)."""
        assert self.socket is not None
        connection, address = self.socket.accept()
        if self.ssl_context:
            connection = self.ssl_context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return connection, address


_PER_MESSAGE_LOGGERS = (
    (evt.EVT_DIMSE_RECV, _handlers.standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, _handlers.standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, _handlers.standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, _handlers.standard_pdu_sent_handler),
)
