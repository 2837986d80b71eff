"""Peers that break the DICOM upper layer protocol are aborted at once and audited with the reason;
a data set that is cut short or whose elements do not fit is refused with 0xC000 (found by
tests/reliability/test_dicom_malformed.py)."""

from __future__ import annotations

import asyncio
import time

import pydicom
import sqlalchemy as sa
from pydicom.uid import generate_uid

from daemon.dicom.scp import DicomListener
from daemon.store.schema import audit_events, instances
from tests.dicom.conftest import pydicom_file
from tests.reliability.dicom_wire import (
    A_ABORT,
    A_ASSOCIATE_AC,
    CONTEXT_ID,
    P_DATA,
    RawAssociation,
    encode_dataset,
    pdu,
    pdv,
    store_pdus,
)
from tests.work.conftest import wait_for


def audited(listener: DicomListener, text: str) -> bool:
    with listener._services.database.connect() as connection:  # noqa: SLF001
        details = connection.execute(sa.select(audit_events.c.detail)).scalars().all()
    return any(text in (detail or "") for detail in details)


def exchange(port: int, data: bytes, *, associate: bool) -> tuple[int | None, float]:
    with RawAssociation(port, timeout=10) as raw:
        if associate:
            assert raw.associate("PROBE").pdu_type == A_ASSOCIATE_AC
        started = time.monotonic()
        raw.send(data)
        answer = raw.answer()
        return answer.pdu_type, time.monotonic() - started


async def test_a_pdu_announcing_gigabytes_is_aborted_at_once(listener: DicomListener) -> None:
    # Before the fix the reactor allocated the announced 4 GB, then waited for them.
    for data, associate in ((pdu(0x01, b"\x00" * 16, length=0xFFFFFFF0), False),
                            (pdu(P_DATA, b"\x00" * 16, length=0x7FFFFFF0), True)):
        answer, seconds = await asyncio.to_thread(exchange, listener.port, data, associate=associate)
        assert answer == A_ABORT and seconds < 2
    await wait_for(lambda: audited(listener, "announces 4294967280 bytes"), what="audit of the pre-association PDU")
    await wait_for(lambda: audited(listener, "aborted after 0 instances: protocol error: PDU of type 0x04"),
                   what="audit of the abort")


async def test_garbage_command_set_aborts_and_is_audited(listener: DicomListener) -> None:
    answer, _ = await asyncio.to_thread(
        exchange, listener.port, pdu(P_DATA, pdv(CONTEXT_ID, 0x03, b"\xde\xad" * 40)), associate=True
    )
    assert answer == A_ABORT
    await wait_for(lambda: audited(listener, "protocol error: cannot process Evt10"), what="audit")


async def test_garbage_before_an_association_is_audited(listener: DicomListener) -> None:
    answer, _ = await asyncio.to_thread(exchange, listener.port, b"GET / HTTP/1.1\r\n\r\n", associate=False)
    assert answer == A_ABORT
    await wait_for(lambda: audited(listener, "protocol error: unknown PDU type 0x47"), what="audit")


def store_raw(port: int, data: bytes, sop_uid: str) -> int | None:
    with RawAssociation(port, timeout=10) as raw:
        assert raw.associate("PROBE").pdu_type == A_ASSOCIATE_AC
        for fragment in store_pdus(data, sop_uid):
            raw.send(fragment)
        return raw.store_status()


async def test_a_truncated_data_set_is_refused(listener: DicomListener) -> None:
    dataset = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    dataset.SOPInstanceUID = generate_uid()
    data = encode_dataset(dataset)
    status = await asyncio.to_thread(store_raw, listener.port, data[: len(data) * 2 // 3], str(dataset.SOPInstanceUID))
    assert status == 0xC000
    with listener._services.database.connect() as connection:  # noqa: SLF001
        assert connection.execute(sa.select(sa.func.count()).select_from(instances)).scalar() == 0
    await wait_for(lambda: audited(listener, "runs"), what="audit of the refusal")
