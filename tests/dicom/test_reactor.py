"""The pure parts of the event-driven reactors: P-DATA-TF decoding into views, C-STORE responses as bytes."""

from __future__ import annotations

import struct

import pytest
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE

from daemon.dicom.reactor import decode_p_data, encode_c_store_response


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
