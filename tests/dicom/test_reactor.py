"""P-DATA-TF decoding into views of the received PDU (pure part of the event-driven reactors)."""

from __future__ import annotations

import struct

import pytest

from daemon.dicom.reactor import decode_p_data


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
