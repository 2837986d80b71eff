"""Character sets: MSH-18 (HL7 table 0211, and the names vendors really send) to Python codecs.

Bytes arrive before anything about them is known, so the header is read as
Latin-1 (every byte maps to one character and the delimiters are ASCII) to
find MSH-18; the whole message is then decoded with the codec named there,
or the configured default. Senders often declare one set and send another
(ASCII declared, UTF-8 or Windows-1252 sent); the decoder falls back in a
fixed order and says so, rather than losing report text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NORMALISE = re.compile(r"[\s_\-/]+")
# Bytes that are C1 controls in 8859/1 and printable in Windows-1252.
_CP1252_ONLY = re.compile(rb"[\x80-\x9f]")

# HL7 table 0211 names, DICOM-style names and common vendor spellings, normalised
# (upper case, without spaces, '_', '-' and '/').
_CODECS: dict[str, str] = {
    "ASCII": "ascii",
    "USASCII": "ascii",
    "ISOIR6": "ascii",
    "ISOIR100": "latin-1",
    "ISOIR101": "iso8859-2",
    "ISOIR109": "iso8859-3",
    "ISOIR110": "iso8859-4",
    "ISOIR144": "iso8859-5",
    "ISOIR127": "iso8859-6",
    "ISOIR126": "iso8859-7",
    "ISOIR138": "iso8859-8",
    "ISOIR148": "iso8859-9",
    "ISOIR192": "utf-8",
    "ISOIR13": "shift_jis",
    "ISOIR14": "shift_jis",
    "ISOIR87": "iso2022_jp",
    "ISOIR159": "iso2022_jp_2",
    "UNICODE": "utf-8",
    "UNICODEUTF8": "utf-8",
    "UTF8": "utf-8",
    "UNICODEUTF16": "utf-16",
    "UTF16": "utf-16",
    "UNICODEUTF32": "utf-32",
    "UTF32": "utf-32",
    "GB180302000": "gb18030",
    "GB18030": "gb18030",
    "GB2312": "gb2312",
    "KSX1001": "euc_kr",
    "BIG5": "big5",
    "WINDOWS1252": "cp1252",
    "CP1252": "cp1252",
    "WIN1252": "cp1252",
    "LATIN1": "latin-1",
}
for _number in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 13, 14, 15, 16):
    _CODECS[f"8859{_number}"] = _CODECS[f"ISO8859{_number}"] = "latin-1" if _number == 1 else f"iso8859-{_number}"
del _number


class UnknownCharset(ValueError):
    pass


def python_codec(name: str) -> str:
    """The Python codec for an MSH-18 value; raise UnknownCharset if there is none."""
    key = _NORMALISE.sub("", name.upper())
    if not key:
        raise UnknownCharset(name)
    codec = _CODECS.get(key)
    if codec is None:
        raise UnknownCharset(name)
    return codec


@dataclass(frozen=True)
class Decoded:
    text: str
    codec: str
    # Set when the bytes were not valid in the declared set: what was declared and what was used.
    warning: str | None = None


def declared_charset(raw: bytes) -> str:
    """MSH-18 (its first repetition) read from the raw header; '' if absent."""
    end = len(raw)
    for terminator in (b"\r", b"\n"):
        found = raw.find(terminator)
        if 0 <= found < end:
            end = found
    header = raw[:end].decode("latin-1").lstrip()
    if len(header) < 4 or header[:3].upper() != "MSH":
        return ""
    separator = header[3]
    fields = header.split(separator)
    # fields[0] is "MSH", fields[1] is MSH-2, so MSH-n is fields[n - 1].
    if len(fields) < 18:
        return ""
    encoding = fields[1]
    repetition = encoding[1] if len(encoding) > 1 else "~"
    component = encoding[0] if encoding else "^"
    return fields[17].split(repetition)[0].split(component)[0].strip()


def decode_message(raw: bytes, default_charset: str) -> Decoded:
    """Decode a whole message with MSH-18's character set (or the default), falling back where the bytes disagree."""
    declared = declared_charset(raw)
    warning = None
    try:
        codec = python_codec(declared) if declared else python_codec(default_charset)
    except UnknownCharset:
        codec = python_codec(default_charset)
        warning = f"unknown MSH-18 character set {declared!r}; used {codec}"
    if codec == "latin-1" and _CP1252_ONLY.search(raw):
        # 8859/1 declared, Windows-1252 sent (curly quotes, dashes): the usual habit.
        try:
            return Decoded(raw.decode("cp1252"), "cp1252", warning)
        except UnicodeDecodeError:
            pass
    try:
        return Decoded(raw.decode(codec), codec, warning)
    except UnicodeDecodeError:
        pass
    for fallback in ("utf-8", "cp1252", "latin-1"):
        if fallback == codec:
            continue
        try:
            text = raw.decode(fallback)
        except UnicodeDecodeError:
            continue
        return Decoded(text, fallback, f"bytes not valid {codec} (MSH-18 {declared or 'empty'}); decoded as {fallback}")
    raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


def encode_reply(text: str, codec: str) -> bytes:
    """Encode an acknowledgement in the character set of the message it answers."""
    if codec in ("utf-16", "utf-32"):
        codec = "utf-8"
    return text.encode(codec, errors="replace")
