"""MLLP framing: frames out of any chunking, sloppy envelopes, oversize, restarts and partial frames."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.hl7.framing import Discarded, Frame, MllpDecoder, Oversize, frame


def _feed_all(decoder: MllpDecoder, chunks: list[bytes]) -> list[object]:
    events: list[object] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events


def test_one_frame() -> None:
    assert MllpDecoder(100).feed(frame(b"MSH|a")) == [Frame(b"MSH|a")]


def test_several_frames_in_one_read_and_noise_between() -> None:
    data = frame(b"MSH|1") + b"\r\n" + frame(b"MSH|2") + b"\x00" + frame(b"MSH|3")
    assert MllpDecoder(100).feed(data) == [Frame(b"MSH|1"), Frame(b"MSH|2"), Frame(b"MSH|3")]


def test_missing_cr_after_fs() -> None:
    data = b"\x0bMSH|1\x1c\x0bMSH|2\x1c"
    assert MllpDecoder(100).feed(data) == [Frame(b"MSH|1"), Frame(b"MSH|2")]


def test_missing_vt_before_msh() -> None:
    decoder = MllpDecoder(100)
    assert _feed_all(decoder, [b"\r\nMS", b"H|1\x1c\r", b"\x0bMSH|2\x1c\r"]) == [Frame(b"MSH|1"), Frame(b"MSH|2")]


def test_garbage_between_frames_is_reported() -> None:
    events = MllpDecoder(100).feed(b"hello" + frame(b"MSH|1"))
    assert events == [Discarded(b"hello", "bytes outside a frame"), Frame(b"MSH|1")]


def test_a_new_vt_restarts_the_frame() -> None:
    events = MllpDecoder(100).feed(b"\x0bMSH|half" + frame(b"MSH|whole"))
    assert isinstance(events[0], Discarded) and events[0].data == b"MSH|half"
    assert events[1] == Frame(b"MSH|whole")


def test_oversize_keeps_the_head_and_reports_the_size() -> None:
    decoder = MllpDecoder(10)
    events = _feed_all(decoder, [b"\x0b" + b"A" * 8, b"B" * 30, b"C\x1c\r"])
    assert events == [Oversize(head=b"AAAAAAAABB", size=39)]
    assert decoder.feed(frame(b"MSH|ok")) == [Frame(b"MSH|ok")]


def test_partial_frame_at_close_is_discarded() -> None:
    decoder = MllpDecoder(100)
    assert decoder.feed(b"\x0bMSH|par") == []
    assert decoder.in_frame
    (event,) = decoder.finish()
    assert isinstance(event, Discarded) and "mid-message" in event.reason


def test_endless_garbage_is_bounded() -> None:
    decoder = MllpDecoder(16)
    events = _feed_all(decoder, [b"x" * 10, b"y" * 10])
    assert len(events) == 1 and isinstance(events[0], Discarded)
    assert decoder.pending_bytes == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.binary(min_size=1, max_size=60).filter(lambda b: b"\x0b" not in b and b"\x1c" not in b),
        min_size=1,
        max_size=6,
    ),
    st.data(),
)
def test_any_chunking_gives_the_same_frames(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    events = _feed_all(MllpDecoder(1000), chunks)
    assert events == [Frame(p) for p in payloads]


def _frames(decoder: MllpDecoder, chunks: list[bytes]) -> list[object]:
    events = _feed_all(decoder, chunks) + decoder.finish()
    return [event for event in events if not isinstance(event, Discarded)]


def test_junk_then_msh_is_junk_however_it_is_cut() -> None:
    # Found by tests/reliability/atheris_targets.py: junk that overflowed the limit was dropped, and "MSH"
    # at the start of the next read then began a frame; in one read the same bytes were all junk.
    stream = b"\x00" * 7 + b"MS" + b"H|1" + b"\x1c"
    assert _frames(MllpDecoder(4), [stream]) == _frames(MllpDecoder(4), [stream[:9], stream[9:]])
    junk_then_msh = b"junk MSH|1\x1c\r"
    assert _frames(MllpDecoder(4), [junk_then_msh]) == []
    assert _frames(MllpDecoder(4), [junk_then_msh[:5], junk_then_msh[5:]]) == []


def test_a_stray_fs_ends_the_junk_before_it() -> None:
    assert _frames(MllpDecoder(100), [b"junk\x1c\rMSH|1\x1c\r"]) == [Frame(b"MSH|1")]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from([b"\x0b", b"\x1c", b"\r", b"MSH|", b"MS", b"\x00"]), st.binary(max_size=12)),
             max_size=20).map(b"".join),
    st.data(),
)
def test_any_bytes_cut_anywhere_give_the_same_frames(stream: bytes, data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    limit = data.draw(st.sampled_from([4, 16, 1000]))
    assert _frames(MllpDecoder(limit), chunks) == _frames(MllpDecoder(limit), [stream])
