"""Test helpers on the wire: an MLLP client over asyncio streams, waiting on conditions."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable

from daemon.hl7.framing import END_BLOCK, frame


class MllpClient:
    """A persistent MLLP connection that sends frames and reads ACK frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, ssl_context: ssl.SSLContext | None = None) -> MllpClient:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ssl_context, server_hostname="localhost" if ssl_context else None
        )
        return cls(reader, writer)

    async def send(self, message: str | bytes) -> None:
        payload = message.encode() if isinstance(message, str) else message
        self.writer.write(frame(payload))
        await self.writer.drain()

    async def read_ack(self, timeout: float = 30.0) -> str:
        data = await asyncio.wait_for(self.reader.readuntil(END_BLOCK + b"\r"), timeout)
        return data.strip(b"\x0b\x1c\r").decode("latin-1")

    async def exchange(self, message: str | bytes, timeout: float = 30.0) -> str:
        await self.send(message)
        return await self.read_ack(timeout)

    async def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True if the server closes the connection (EOF) within the timeout."""
        try:
            return await asyncio.wait_for(self.reader.read(), timeout) == b""
        except (ConnectionError, ssl.SSLError):
            return True

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


def msa(ack: str) -> list[str]:
    """The MSA fields of an ACK: [code, control id, ...]."""
    for segment in ack.split("\r"):
        if segment.startswith("MSA"):
            return segment.split("|")[1:]
    raise AssertionError(f"no MSA in {ack!r}")


async def eventually(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait until `condition()` holds, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
