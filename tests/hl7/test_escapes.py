"""Escape sequences and character sets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.hl7.charsets import UnknownCharset, decode_message, declared_charset, python_codec
from daemon.hl7.escapes import DEFAULT_DELIMITERS, Delimiters, escape, unescape


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        ("a\\F\\b", "a|b"),
        ("a\\S\\b\\T\\c\\R\\d\\E\\e", "a^b&c~d\\e"),
        ("one\\.br\\two", "one\ntwo"),
        ("one\\.BR\\two", "one\ntwo"),
        ("a\\.sp2\\b", "a\n\nb"),
        ("a\\.sk3\\b", "a   b"),
        ("\\.in+4\\\\.ti-2\\text\\.fi\\\\.nf\\", "text"),
        ("\\H\\bold\\N\\ plain", "bold plain"),
        ("caf\\XC3A9\\", "café"),
        ("line\\X0D0A\\next", "line\nnext"),
        ("\\Zlocal\\kept", "kept"),
        ("C:\\temp\\file", "C:\\temp\\file"),  # not escape sequences: kept as sent
        ("trailing \\", "trailing \\"),
        ("no escapes", "no escapes"),
    ],
)
def test_unescape(raw: str, text: str) -> None:
    assert unescape(raw, DEFAULT_DELIMITERS, "ascii") == text


def test_unescape_with_other_delimiters() -> None:
    delimiters = Delimiters("#", "$", "%", "/", "@")
    assert unescape("a/F/b/S/c/.br/d", delimiters) == "a#b$c\nd"


def test_hex_in_latin1_message() -> None:
    assert unescape("\\XE9\\", DEFAULT_DELIMITERS, "latin-1") == "é"


@given(st.text(max_size=80))
def test_escape_round_trips(text: str) -> None:
    flat = " ".join(text.splitlines()).replace("\x00", "")  # NUL is never kept (PostgreSQL refuses it in text)
    escaped = escape(text, DEFAULT_DELIMITERS)
    assert unescape(escaped, DEFAULT_DELIMITERS) == flat
    assert not any(ord(char) < 0x20 for char in escaped)  # nothing that could break MLLP framing


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("ASCII", "ascii"),
        ("8859/1", "latin-1"),
        ("8859/15", "iso8859-15"),
        ("UNICODE UTF-8", "utf-8"),
        ("utf-8", "utf-8"),
        ("ISO_IR 100", "latin-1"),
        ("ISO IR192", "utf-8"),
        ("windows-1252", "cp1252"),
    ],
)
def test_charset_names(name: str, codec: str) -> None:
    assert python_codec(name) == codec


def test_unknown_charset() -> None:
    with pytest.raises(UnknownCharset):
        python_codec("EBCDIC-KLINGON")


def test_declared_charset_reads_msh18_first_repetition() -> None:
    assert declared_charset(b"MSH|^~\\&|A|B|C|D|1||ORU^R01|1|P|2.5||||||8859/1~UNICODE UTF-8\rPID|") == "8859/1"
    assert declared_charset(b"MSH|^~\\&|A|B|C|D|1||ORU^R01|1|P|2.5\r") == ""


def test_decode_falls_back_and_says_so() -> None:
    decoded = decode_message("MSH|^~\\&|x\rOBX|é".encode("utf-8"), "ASCII")
    assert decoded.text.endswith("é") and decoded.codec == "utf-8" and decoded.warning
    declared_utf8_sent_latin1 = "MSH|^~\\&|A|B|C|D|1||ORU^R01|1|P|2.5||||||UNICODE UTF-8\rOBX|é".encode("latin-1")
    decoded = decode_message(declared_utf8_sent_latin1, "ASCII")
    assert decoded.text.endswith("é") and decoded.warning


def test_unknown_declared_charset_uses_default() -> None:
    decoded = decode_message(b"MSH|^~\\&|A|B|C|D|1||ORU^R01|1|P|2.5||||||MARTIAN\rOBX|x", "ASCII")
    assert decoded.codec == "ascii" and "MARTIAN" in (decoded.warning or "")


@pytest.mark.parametrize("command", ["sp", "sk"])
def test_spacing_commands_are_bounded(command: str) -> None:
    # A 20-byte "\.sp9999999999\" became 10 GB of line breaks (found by tests/reliability fuzzing).
    text = unescape(f"a\\.{command}9999999999\\b", DEFAULT_DELIMITERS)
    assert text.startswith("a") and text.endswith("b") and len(text) <= 102
    assert unescape(f"a\\.{command}3\\b", DEFAULT_DELIMITERS) == "a" + ("\n" if command == "sp" else " ") * 3 + "b"

