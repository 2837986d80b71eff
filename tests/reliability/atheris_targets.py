"""Coverage-guided fuzz targets (atheris, libFuzzer) for the HL7 parser and the MLLP frame extractor.

    python -m tests.reliability.atheris_targets parse|mllp [libFuzzer options] [CORPUS_DIR ...]

Each target checks the same properties as the hypothesis tests (test_hl7_fuzz.py); a property that fails,
or any exception other than MessageProblem, makes libFuzzer stop with the input that did it. Run by
test_atheris.py as a subprocess (atheris takes over the process), with a bounded number of runs.
"""

from __future__ import annotations

import datetime as dt
import sys

import atheris

with atheris.instrument_imports(include=["daemon.hl7"]):
    from daemon.hl7.ack import acknowledgement_codes, build_ack
    from daemon.hl7.charsets import encode_reply
    from daemon.hl7.framing import END_BLOCK, START_BLOCK, Discarded, Frame, MllpDecoder, Oversize
    from daemon.hl7.parse import MessageProblem, ParseSettings, parse_message, peek_header

SETTINGS = ParseSettings()
NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.timezone.utc)


def parse_target(data: bytes) -> None:
    raw = data.replace(START_BLOCK, b"").replace(END_BLOCK, b"")  # never inside an MLLP frame
    problem = None
    try:
        header = parse_message(raw, SETTINGS).header
    except MessageProblem as exc:
        header, problem = exc.header, exc.problem
    peek_header(raw, SETTINGS.default_charset)
    for code in acknowledgement_codes(header, problem):
        text = build_ack(header, code, "NL1", NOW, problem).text
        encoded = encode_reply(text, header.codec if header else "ascii")
        if START_BLOCK in encoded or END_BLOCK in encoded or "\n" in text:
            raise AssertionError(f"acknowledgement would break its frame: {text!r}")
        if not all(segment[:3].isalpha() for segment in text.split("\r")):
            raise AssertionError(f"acknowledgement with a broken segment: {text!r}")


def mllp_target(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    limit = provider.PickValueInList([4, 32, 1024])
    cuts = sorted(provider.ConsumeIntInRange(0, 64) for _ in range(provider.ConsumeIntInRange(0, 6)))
    stream = provider.ConsumeBytes(provider.remaining_bytes())
    whole = _frames(MllpDecoder(limit), [stream], limit)
    edges = [0, *cuts, len(stream)]
    pieces = [stream[a:b] for a, b in zip(edges, edges[1:]) if a <= b]
    if b"".join(pieces) == stream and _frames(MllpDecoder(limit), pieces, limit) != whole:
        raise AssertionError("frames depend on how the stream was cut")


def _frames(decoder: MllpDecoder, pieces: list[bytes], limit: int) -> list[object]:
    events = []
    for piece in pieces:
        events += decoder.feed(piece)
        if len(decoder._buffer) > limit:  # noqa: SLF001
            raise AssertionError("decoder holds more than its limit")
    events += decoder.finish()
    for event in events:
        if isinstance(event, Frame) and (START_BLOCK in event.payload or END_BLOCK in event.payload):
            raise AssertionError("frame payload with an MLLP control byte")
        if isinstance(event, Frame) and len(event.payload) > limit:
            raise AssertionError("frame over the limit")
        if not isinstance(event, (Frame, Oversize, Discarded)):
            raise AssertionError(f"unknown event {event!r}")
    return [event for event in events if not isinstance(event, Discarded)]


TARGETS = {"parse": parse_target, "mllp": mllp_target}


def main() -> None:
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
