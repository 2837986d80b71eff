"""MLLP framing (HL7 v2 Minimal Lower Layer Protocol): <VT> message <FS><CR>.

A pure, incremental decoder: bytes in, frame events out; no I/O. It is
liberal where senders are known to be sloppy (a missing <CR> after <FS>,
line breaks or NULs between frames, a message that starts with "MSH" but
no <VT>), and strict about size: a frame longer than the limit is cut, its
first `max_bytes` kept, and reported as `Oversize` once its end arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

START_BLOCK = b"\x0b"  # <VT>
END_BLOCK = b"\x1c"  # <FS>
CARRIAGE_RETURN = b"\x0d"  # <CR>

# Bytes tolerated between frames without comment.
_INTER_FRAME_NOISE = b"\r\n\t \x00"


@dataclass(frozen=True)
class Frame:
    """One complete message payload (without the MLLP envelope)."""

    payload: bytes


@dataclass(frozen=True)
class Oversize:
    """A message longer than the limit: its first `max_bytes` bytes and its full size."""

    head: bytes
    size: int


@dataclass(frozen=True)
class Discarded:
    """Bytes that were not part of any frame (garbage between frames, or a frame restarted by a new <VT>)."""

    data: bytes
    reason: str


FrameEvent = Frame | Oversize | Discarded


def frame(payload: bytes) -> bytes:
    """Wrap a payload in the MLLP envelope."""
    return START_BLOCK + payload + END_BLOCK + CARRIAGE_RETURN


class MllpDecoder:
    """Incremental MLLP decoder. `feed` returns the events completed by the new bytes."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._frame_size = 0  # bytes of the current frame seen so far, kept or not
        # Junk seen since the last frame (not a beginning of "MSH"): no <VT>-less frame until <VT> or <FS>.
        self._junk = False

    @property
    def in_frame(self) -> bool:
        """True while a frame has started and not ended (a disconnect now loses a partial message)."""
        return self._in_frame

    @property
    def pending_bytes(self) -> int:
        return self._frame_size if self._in_frame else len(self._buffer)

    def feed(self, data: bytes) -> list[FrameEvent]:
        events: list[FrameEvent] = []
        view = memoryview(data)
        position = 0
        while position < len(data):
            if not self._in_frame:
                position = self._between_frames(data, position, events)
                continue
            end = data.find(END_BLOCK, position)
            restart = data.find(START_BLOCK, position, end if end >= 0 else len(data))
            if restart >= 0:
                # A new <VT> before <FS>: the sender gave up on the previous frame.
                self._append(view[position:restart])
                events.append(Discarded(bytes(self._buffer), "frame restarted by <VT> before <FS>"))
                self._buffer.clear()
                self._frame_size = 0
                position = restart + 1
                continue
            self._append(view[position : end if end >= 0 else len(data)])
            if end < 0:
                break
            events.append(self._finish())
            position = end + 1  # the <CR> after <FS> is inter-frame noise
        return events

    def finish(self) -> list[FrameEvent]:
        """The connection ended: report what is left as discarded (a partial message is never processed)."""
        events: list[FrameEvent] = []
        if self._in_frame:
            events.append(
                Discarded(bytes(self._buffer), f"connection closed mid-message after {self._frame_size} bytes")
            )
        elif self._buffer.strip(_INTER_FRAME_NOISE):
            events.append(Discarded(bytes(self._buffer), "bytes outside a frame"))
        self._buffer.clear()
        self._in_frame = False
        self._frame_size = 0
        self._junk = False
        return events

    def _between_frames(self, data: bytes, position: int, events: list[FrameEvent]) -> int:
        """Consume bytes outside a frame; return where to continue (inside a frame if one started).

        <VT> starts a frame; so does "MSH" at the start of the bytes after a frame (a sender that omits
        <VT>), but not after other junk; a stray <FS> ends the junk before it. Between frames the buffer
        holds either a beginning of "MSH" (at most two bytes) or, once junk was seen, the junk to report.
        The decision depends only on the bytes, never on how they were cut into reads.
        """
        start = data.find(START_BLOCK, position)
        stray_end = start if start >= 0 else len(data)
        stray_fs = data.find(END_BLOCK, position, stray_end)
        if stray_fs >= 0:
            stray_end = stray_fs
        region = data[position:stray_end]
        if not self._junk:
            held = bytes(self._buffer)  # "", "M" or "MS"
            candidate = (held + region).lstrip(_INTER_FRAME_NOISE)
            if candidate[:3].upper() == b"MSH":
                # Some senders omit <VT>: bytes that begin with "MSH" start a frame.
                skipped = len(held) + len(region) - len(candidate)
                self._begin_frame()
                if skipped >= len(held):
                    return position + skipped - len(held)
                self._append(memoryview(held[skipped:]))
                return position
            self._buffer[:] = candidate
            self._junk = not b"MSH".startswith(candidate.upper())
            if not self._junk and stray_end == len(data):
                return len(data)  # noise, or a beginning of "MSH": wait for more
        else:
            self._buffer.extend(region)
        if start >= 0 and stray_fs < 0:
            self._report_junk(events)
            self._begin_frame()
            return start + 1
        if stray_fs >= 0:
            self._report_junk(events)
            return stray_fs + 1
        if len(self._buffer) > self._max_bytes:
            events.append(Discarded(bytes(self._buffer), "bytes outside a frame"))
            self._buffer.clear()
        return len(data)

    def _report_junk(self, events: list[FrameEvent]) -> None:
        if self._buffer:
            events.append(Discarded(bytes(self._buffer), "bytes outside a frame"))
        self._buffer.clear()
        self._junk = False

    def _begin_frame(self) -> None:
        self._buffer.clear()
        self._in_frame = True
        self._junk = False
        self._frame_size = 0

    def _append(self, chunk: memoryview) -> None:
        room = self._max_bytes - len(self._buffer)
        if room > 0:
            self._buffer.extend(chunk[:room])
        self._frame_size += len(chunk)

    def _finish(self) -> FrameEvent:
        payload = bytes(self._buffer)
        size = self._frame_size
        self._buffer.clear()
        self._in_frame = False
        self._frame_size = 0
        if size > self._max_bytes:
            return Oversize(head=payload, size=size)
        return Frame(payload)
