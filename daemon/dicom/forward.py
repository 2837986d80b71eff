"""C-STORE SCU: send stored files to a destination AE, each in the transfer syntax it is stored in.

One presentation context is proposed per (SOP class, transfer syntax) pair the
files need, so nothing is transcoded; a destination that does not accept a
pair gets none of those files and the send fails naming them (a retry will
not help until the destination is configured for them).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.status import STATUS_SUCCESS, STATUS_WARNING, code_to_category

from daemon.config import AeAddress

log = logging.getLogger("neurolabel.dicom.forward")

# An association carries at most 128 presentation contexts (PS3.8 9.3.2.2: odd ids 1-255).
MAX_CONTEXTS = 128


class ForwardError(RuntimeError):
    """The destination was unreachable or refused the association or an object."""


@dataclass(frozen=True)
class SendOutcome:
    sent: int
    warnings: int


StoredFile = tuple[Path, str, str]  # (path, SOP Class UID, Transfer Syntax UID)


def send_files(
    files: Sequence[StoredFile],
    destination: AeAddress,
    *,
    calling_ae_title: str,
    timeout_seconds: float,
) -> SendOutcome:
    """Send every file; raise ForwardError listing what did not arrive."""
    (outcome,) = send_groups([files], destination, calling_ae_title=calling_ae_title, timeout_seconds=timeout_seconds)
    if isinstance(outcome, ForwardError):
        raise outcome
    return outcome


def send_groups(
    groups: Sequence[Sequence[StoredFile]],
    destination: AeAddress,
    *,
    calling_ae_title: str,
    timeout_seconds: float,
) -> list[SendOutcome | ForwardError]:
    """Send the files of several groups (studies) over one association; per group, what arrived or why not.

    One association for many studies saves its setup and release per study (most of a one-study forward's
    time). A group whose files all arrived gets its SendOutcome; one that lost any gets a ForwardError naming
    them (or the association's failure), so each study's forward job succeeds or retries on its own.
    """
    items = [(index, item) for index, files in enumerate(groups) for item in files]
    pairs = list(dict.fromkeys((sop_class, syntax) for _, (_, sop_class, syntax) in items))
    results: dict[int, _Result] = {}
    broken: dict[int, ForwardError] = {}
    for start in range(0, len(pairs), MAX_CONTEXTS):
        chunk = set(pairs[start : start + MAX_CONTEXTS])
        batch = [(position, item) for position, (_, item) in enumerate(items) if (item[1], item[2]) in chunk]
        try:
            found = _send_batch([item for _, item in batch], sorted(chunk), destination, calling_ae_title,
                                timeout_seconds)
        except ForwardError as exc:
            for position, _ in batch:
                broken.setdefault(items[position][0], exc)
            continue
        for (position, _), result in zip(batch, found):
            results[position] = result
    by_group: dict[int, list[_Result]] = {}
    for position, (owner, _) in enumerate(items):
        if position in results:
            by_group.setdefault(owner, []).append(results[position])
    outcomes: list[SendOutcome | ForwardError] = []
    for index, files in enumerate(groups):
        if index in broken:
            outcomes.append(broken[index])
            continue
        mine = by_group.get(index, [])
        failures = [result.failure for result in mine if result.failure]
        if failures:
            shown = "; ".join(failures[:5]) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else "")
            error = f"{len(failures)} of {len(files)} object(s) not stored at {destination}: {shown}"
            outcomes.append(ForwardError(error))
        else:
            outcomes.append(SendOutcome(len(mine), sum(1 for result in mine if result.warning)))
    return outcomes


@dataclass(frozen=True)
class _Result:
    failure: str = ""  # why the file did not arrive; "" when it did
    warning: bool = False


def _send_batch(
    files: Sequence[StoredFile],
    contexts: Sequence[tuple[str, str]],
    destination: AeAddress,
    calling_ae_title: str,
    timeout_seconds: float,
) -> list[_Result]:
    """Per file, in order, what became of it; ForwardError when the association cannot be established."""
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_seconds
    ae.connection_timeout = timeout_seconds
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, [syntax])
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "not established"
        raise ForwardError(f"association with {destination} {reason}")
    _no_delay(assoc)
    keep_responses(assoc)
    results: list[_Result] = []
    try:
        accepted = _accepted_pairs(assoc)
        for path, sop_class, syntax in files:
            if not assoc.is_established:
                results.append(_Result(f"{path.name}: not sent, the association was lost"))
                continue
            if (sop_class, syntax) not in accepted:
                results.append(_Result(f"{path.name}: {destination} does not accept SOP class {sop_class} in {syntax}"))
                continue
            response = assoc.send_c_store(path)
            status = response.get("Status") if response else None
            if status is None:
                results.append(_Result(f"{path.name}: no response (association lost or timed out)"))
                continue
            category = code_to_category(int(status))
            if category in (STATUS_SUCCESS, STATUS_WARNING):
                results.append(_Result(warning=category == STATUS_WARNING))
            else:
                results.append(_Result(f"{path.name}: status 0x{int(status):04X} ({category})"))
    finally:
        if assoc.is_established:
            assoc.release()
    return results


def _no_delay(assoc: Association) -> None:
    """Turn Nagle's algorithm off: otherwise the tail of each object waits for a delayed ACK (~40 ms on loopback)."""
    raw = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if isinstance(raw, socket.socket):
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def keep_responses(assoc: Association) -> None:
    """Give a response that pynetdicom's reactor thread took back to the request waiting for it.

    Before each request, `send_c_store` pauses the association's reactor thread with a handshake that has a
    gap: the reactor can be let through its checkpoint just before the pause, and then take the response off
    the DIMSE queue itself (a loaded machine, where threads wait for the GIL, makes that likely). It drops it
    as "Received unexpected C-STORE service message", and `send_c_store` waits out the whole DIMSE timeout
    (30 s) for a response that came in milliseconds (pynetdicom issue 850). This association only sends
    requests, so the reactor never has a request to serve: whatever response it takes is put back on the
    queue, where `send_c_store` finds it.
    """
    serve = assoc._serve_request

    def serve_or_give_back(message: Any, context_id: int) -> None:
        if message.is_valid_response:
            assoc.dimse.msg_queue.put((context_id, message))
            return
        serve(message, context_id)

    assoc._serve_request = serve_or_give_back  # type: ignore[method-assign]


def _accepted_pairs(assoc: Association) -> set[tuple[str, str]]:
    return {(str(context.abstract_syntax), str(context.transfer_syntax[0])) for context in assoc.accepted_contexts}
