"""HL7 v2 delimiters and escape sequences (HL7 v2.5 section 2.7).

`unescape` turns a field value into text: delimiter escapes (\\F\\ \\S\\ \\T\\
\\R\\ \\E\\ \\P\\), highlighting (\\H\\ \\N\\, dropped), formatted-text
commands (\\.br\\, \\.sp\\, \\.sk\\, \\.ce\\, \\.in\\, \\.ti\\, \\.fi\\, \\.nf\\)
and hexadecimal data (\\Xhh..\\, bytes in the message's character set).
Anything that is not a known sequence is kept literally, so a stray
backslash in a sender's text survives. `escape` is the inverse for the
values this daemon writes into acknowledgements.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as written in a reply."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


DEFAULT_DELIMITERS = Delimiters()
# Most blank lines or spaces one \.sp n\ or \.sk n\ command expands to.
MAX_SPACING = 100
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def unescape(value: str, delimiters: Delimiters, codec: str = "ascii") -> str:
    """Decode HL7 escape sequences in `value` (one field, component or repetition)."""
    if delimiters.escape not in value:
        return value
    pattern = _escape_pattern(delimiters.escape)
    return pattern.sub(lambda match: _replacement(match.group(1), delimiters, codec), value)


def escape(value: str, delimiters: Delimiters) -> str:
    """Escape `value` for use inside one component of a field; line breaks become spaces, other control
    characters (which would break MLLP framing: <VT>, <FS>) hexadecimal escapes."""
    if value.isalnum() and value.isascii():  # nothing to escape (delimiters are never letters or digits)
        return value
    esc = delimiters.escape
    value = value.replace(esc, f"{esc}E{esc}")
    for char, code in (
        (delimiters.field, "F"),
        (delimiters.component, "S"),
        (delimiters.subcomponent, "T"),
        (delimiters.repetition, "R"),
    ):
        value = value.replace(char, f"{esc}{code}{esc}")
    if delimiters.truncation:
        value = value.replace(delimiters.truncation, f"{esc}P{esc}")
    return escape_controls(" ".join(value.splitlines()), delimiters)


def escape_controls(value: str, delimiters: Delimiters) -> str:
    """Make a value echoed as sent (already in escaped form) safe in a reply: control characters (a raw line
    feed that continued a segment, <VT>, <FS>) become hexadecimal escapes."""
    esc = delimiters.escape
    return _CONTROL.sub(lambda match: f"{esc}X{ord(match.group()):02X}{esc}", value)


@functools.lru_cache(maxsize=8)
def _escape_pattern(esc: str) -> re.Pattern[str]:
    e = re.escape(esc)
    body = (
        r"[FSTREPHN]"
        r"|(?i:\.br|\.fi|\.nf|\.ce|\.sp\s*\+?\d*|\.sk\s*\+?\d*|\.in\s*[+-]?\d*|\.ti\s*[+-]?\d*)"
        r"|X(?:[0-9A-Fa-f]{2})*"
        r"|C[0-9A-Fa-f]{4}|M[0-9A-Fa-f]{4}(?:[0-9A-Fa-f]{2})?"
        rf"|Z[^{e}\r\n]{{0,32}}"
    )
    return re.compile(rf"{e}({body}){e}")


def _replacement(sequence: str, delimiters: Delimiters, codec: str) -> str:
    first = sequence[0]
    if len(sequence) == 1:
        return {
            "F": delimiters.field,
            "S": delimiters.component,
            "T": delimiters.subcomponent,
            "R": delimiters.repetition,
            "E": delimiters.escape,
            "P": delimiters.truncation or "#",
        }.get(first, "")  # \H\ and \N\ (highlighting) have no plain-text form
    if first == ".":
        command = sequence[1:3].lower()
        argument = sequence[3:].strip().lstrip("+")
        # Bounded: "\.sp999999999\" in a 1 MB message must not become gigabytes of line breaks.
        count = min(int(argument), MAX_SPACING) if argument.isascii() and argument.isdigit() else 1
        if command == "br" or command == "ce":
            return "\n"
        if command == "sp":
            return "\n" * max(1, count)
        if command == "sk":
            return " " * max(1, count)
        return ""  # .in, .ti, .fi, .nf change layout only
    if first == "X":
        text = _decode_hex(bytes.fromhex(sequence[1:]), codec)
        return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    return ""  # \Cxxyy\, \Mxxyyzz\ (ISO 2022 switches) and \Z..\ (local) carry no text


def _decode_hex(data: bytes, codec: str) -> str:
    """Bytes from \\X..\\ in the message's character set; like whole messages, UTF-8 then Windows-1252 if not."""
    for candidate in (codec, "utf-8", "cp1252"):
        if candidate in ("utf-16", "utf-32"):
            continue
        try:
            return data.decode(candidate)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")
