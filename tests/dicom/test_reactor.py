"""The pure parts of the event-driven reactors: P-DATA-TF decoding into views, C-STORE responses as bytes."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from daemon.dicom.reactor import (
    StoreCommand,
    decode_p_data,
    encode_c_store_response,
    encode_p_data_tf,
    parse_c_store_request,
)


def pdv(context_id: int, header: int, data: bytes) -> bytes:
    return struct.pack(">LBB", len(data) + 2, context_id, header) + data


def test_values_are_views_with_context_ids() -> None:
    body = bytearray(pdv(1, 0x03, b"command") + pdv(3, 0x00, b"data-part"))
    primitive = decode_p_data(body)
    values = primitive.presentation_data_value_list
    assert [(context, bytes(data)) for context, data in values] == [(1, b"\x03command"), (3, b"\x00data-part")]
    assert all(isinstance(data, memoryview) for _, data in values)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        struct.pack(">LB", 10, 1) + b"short",  # item longer than the PDU
        struct.pack(">LB", 1, 1),  # item without a message control header
        pdv(1, 0x02, b"ok") + b"\x00\x00",  # trailing bytes that are not an item
    ],
)
def test_malformed_pdus_are_rejected(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode_p_data(bytearray(body))


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC000, 0x0111])
@pytest.mark.parametrize("instance", ["1.2.3.4", "1.2.3.45"])  # even and odd lengths
def test_c_store_response_bytes_are_pynetdicoms(status: int, instance: str) -> None:
    response = C_STORE()
    response.MessageIDBeingRespondedTo = 7
    response.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    response.AffectedSOPInstanceUID = instance
    response.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(response)
    [fragment] = [value for primitive in message.encode_msg(1, 16384) for _, value in
                  primitive.presentation_data_value_list]
    assert fragment[0] == 0x03
    assert encode_c_store_response(7, "1.2.840.10008.5.1.4.1.1.4", instance, status) == fragment[1:]


def command_bytes(message: DIMSEMessage) -> bytes:
    """The command set pynetdicom sends for `message` (its one command fragment, without the control header)."""
    [fragment] = [value for primitive in message.encode_msg(1, 1 << 20) for _, value in
                  primitive.presentation_data_value_list if value[0] & 1]
    return bytes(fragment[1:])


def store_request(move_originator: tuple[str, int] | None = None, instance: str = "1.2.3.45") -> C_STORE_RQ:
    request = C_STORE()
    request.MessageID = 5
    request.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    request.AffectedSOPInstanceUID = instance
    request.Priority = 2
    if move_originator is not None:
        request.MoveOriginatorApplicationEntityTitle, request.MoveOriginatorMessageID = move_originator
    request.DataSet = BytesIO(b"\x08\x00\x16\x00\x02\x00\x00\x00xx")
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    return message


@pytest.mark.parametrize("move_originator", [None, ("MOVER", 9)])
@pytest.mark.parametrize("instance", ["1.2.3.4", "1.2.3.45"])  # even and odd lengths
def test_c_store_request_is_read_as_pynetdicom_reads_it(move_originator: tuple[str, int] | None, instance: str) -> None:
    encoded = command_bytes(store_request(move_originator, instance))
    assert parse_c_store_request(memoryview(encoded)) == StoreCommand(
        message_id=5, sop_class_uid="1.2.840.10008.5.1.4.1.1.4", sop_instance_uid=instance, priority=2,
        move_originator_ae=move_originator[0] if move_originator else None,
        move_originator_id=move_originator[1] if move_originator else None,
    )


def test_other_command_sets_are_left_to_pynetdicom() -> None:
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    echo_message = C_ECHO_RQ()
    echo_message.primitive_to_message(echo)
    store = command_bytes(store_request())
    unknown_element = store + struct.pack("<HHL", 0x0000, 0x0600, 2) + b"AB"
    multi_valued = store.replace(b"1.2.3.45", b"1.2\\3.45")
    assert parse_c_store_request(command_bytes(echo_message)) is None
    assert parse_c_store_request(unknown_element) is None
    assert parse_c_store_request(multi_valued) is None
    assert parse_c_store_request(store[:-3]) is None  # truncated
    assert parse_c_store_request(b"") is None


@pytest.mark.parametrize("value", [b"\x03", b"\x03" + bytes(range(200))])
def test_p_data_tf_bytes_are_pynetdicoms(value: bytes) -> None:
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[7, value]]  # type: ignore[list-item]
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)
    assert encode_p_data_tf(7, value) == pdu.encode()
    assert [(context, bytes(data)) for context, data in
            decode_p_data(bytearray(encode_p_data_tf(7, value)[6:])).presentation_data_value_list] == [(7, value)]
