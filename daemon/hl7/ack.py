"""Acknowledgements: which ones a message asked for (MSH-15/16), and their ER7 text. Pure functions.

Original mode (MSH-15 and MSH-16 empty): one ACK, AA / AE / AR.
Enhanced mode: an accept (commit) ACK, CA / CE / CR, if MSH-15's condition
holds, then an application ACK, AA / AE / AR, if MSH-16's holds; an empty
one of the two means "never". An ACK is never sent for an incoming ACK.

The reply uses the delimiters, version and character set of the message it
answers. Errors carry an ERR segment: ERR-1 (segment^sequence^field^code)
for versions before 2.5, ERR-2/3/4/8 (location, HL7 error code from table
0357, severity, text) from 2.5 on.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from daemon.hl7.codes import AckCode, AckCondition, ErrorCode, Problem, Severity
from daemon.hl7.escapes import DEFAULT_DELIMITERS, Delimiters, escape, escape_controls
from daemon.hl7.parse import Header

OUR_APPLICATION = "NEUROLABEL"
DEFAULT_VERSION = "2.5"
ERROR_TABLE = "HL70357"


@dataclass(frozen=True)
class Ack:
    code: AckCode
    text: str  # ER7, segments separated by <CR>


def acknowledgement_codes(header: Header | None, problem: Problem | None) -> list[AckCode]:
    """The acknowledgements owed for a message, in sending order (possibly none)."""
    if problem is None:
        application = AckCode.APPLICATION_ACCEPT
        commit = AckCode.COMMIT_ACCEPT
    elif problem.reject:
        application = AckCode.APPLICATION_REJECT
        internal = problem.code is ErrorCode.APPLICATION_INTERNAL_ERROR
        commit = AckCode.COMMIT_ERROR if internal else AckCode.COMMIT_REJECT
    else:
        # Content errors: the message itself is kept (safely stored), its content refused.
        application = AckCode.APPLICATION_ERROR
        commit = AckCode.COMMIT_ACCEPT
    if header is None or not header.enhanced_mode:
        return [application]
    codes = []
    if _wanted(header.accept_ack, commit is AckCode.COMMIT_ACCEPT):
        codes.append(commit)
    if _wanted(header.application_ack, application is AckCode.APPLICATION_ACCEPT):
        codes.append(application)
    return codes


def _wanted(condition: str, success: bool) -> bool:
    if condition == AckCondition.ALWAYS:
        return True
    if condition == AckCondition.ERROR_ONLY:
        return not success
    if condition == AckCondition.SUCCESS_ONLY:
        return success
    return False  # NE, or empty in enhanced mode


def build_ack(
    header: Header | None,
    code: AckCode,
    control_id: str,
    now: dt.datetime,
    problem: Problem | None = None,
) -> Ack:
    """One ACK message answering `header` (None when the MSH could not be read)."""
    delimiters = header.delimiters if header else DEFAULT_DELIMITERS
    version = (header.version if header else "") or DEFAULT_VERSION
    fs, cs = delimiters.field, delimiters.component
    # MSH-9.2, -11 and -12 were unescaped when read: escape them again, or an escaped <CR> or <FS> in the
    # message would split the ACK's segments or end its MLLP frame early (found by tests/reliability fuzzing).
    trigger = escape(header.trigger_event, delimiters) if header else ""
    if _at_least(version, "2.4"):
        message_type = f"ACK{cs}{trigger}{cs}ACK" if trigger else f"ACK{cs}{cs}ACK"
    elif _at_least(version, "2.3") and trigger:
        message_type = f"ACK{cs}{trigger}"
    else:
        message_type = "ACK"
    enhanced = header is not None and header.enhanced_mode
    msh = [
        "MSH",
        delimiters.encoding_characters,
        # MSH-3..6, MSA-2 and MSH-18 are echoed as sent (they are identities), only made frame-safe.
        escape_controls(header.receiving_application, delimiters)
        if header and header.receiving_application
        else OUR_APPLICATION,
        escape_controls(header.receiving_facility, delimiters) if header else "",
        escape_controls(header.sending_application, delimiters) if header else "",
        escape_controls(header.sending_facility, delimiters) if header else "",
        _timestamp(now),
        "",
        message_type,
        escape(control_id, delimiters),
        escape((header.processing_id if header else "") or "P", delimiters),
        escape(version, delimiters),
        "",
        "",
        # An application ACK in enhanced mode asks for no acknowledgement back.
        "NE" if enhanced else "",
        "NE" if enhanced else "",
        "",
        escape_controls(header.charset, delimiters) if header else "",
    ]
    msa = ["MSA", code.value, escape_controls(header.control_id, delimiters) if header else ""]
    if problem is not None and not _at_least(version, "2.7"):
        msa.append(escape(_short(problem.text), delimiters))
    segments = [fs.join(msh).rstrip(fs), fs.join(msa)]
    if problem is not None:
        segments.append(_err_segment(problem, version, delimiters))
    return Ack(code, "\r".join(segments))


def _err_segment(problem: Problem, version: str, delimiters: Delimiters) -> str:
    fs, cs, ss = delimiters.field, delimiters.component, delimiters.subcomponent
    location = problem.location
    code_text = escape(problem.code.text, delimiters)
    if not _at_least(version, "2.5"):
        # ERR-1 (ELD): segment id ^ sequence ^ field position ^ code & text & table
        parts = [location.segment, str(location.sequence), str(location.field or "")] if location else ["", "", ""]
        eld = cs.join([*parts, ss.join([problem.code.value, code_text, ERROR_TABLE])])
        return f"ERR{fs}{eld}"
    erl = ""
    if location is not None:
        erl_parts = [location.segment, str(location.sequence)]
        if location.field is not None:
            erl_parts += [str(location.field), "1"]
            if location.component is not None:
                erl_parts.append(str(location.component))
        erl = cs.join(erl_parts)
    fields = [
        "ERR",
        "",
        erl,
        cs.join([problem.code.value, code_text, ERROR_TABLE]),
        Severity.ERROR.value,
        "",
        "",
        "",
        escape(_short(problem.text, 250), delimiters),
    ]
    return fs.join(fields)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _at_least(version: str, minimum: str) -> bool:
    return _version_key(version) >= _version_key(minimum)


# Both memoised: the ACKs of one batch share their time, and senders their version.
@functools.lru_cache(maxsize=64)
def _version_key(version: str) -> tuple[int, ...]:
    # ASCII digits only: str.isdigit() is also true for "²", which int() refuses (found by atheris).
    return tuple(int(p) for p in version.split(".") if p.isascii() and p.isdigit())


@functools.lru_cache(maxsize=8)
def _timestamp(now: dt.datetime) -> str:
    return now.strftime("%Y%m%d%H%M%S%z")
