"""The audit trail: one append-only row per thing that happened, written in the caller's transaction.

Identifiers may name a study, accession or message; `detail` is for reasons and
error texts. Never put report text or patient names here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect

from daemon.store.driver import DriverStatement
from daemon.store.schema import audit_events

SUCCESS = "success"
FAILURE = "failure"
REJECTED = "rejected"
DUPLICATE = "duplicate"


def record(
    connection: Connection,
    kind: str,
    outcome: str,
    *,
    actor: str | None = None,
    identifiers: Mapping[str, object] | None = None,
    duration_ms: float | None = None,
    detail: str | None = None,
) -> None:
    """Append one audit event, e.g. record(c, "hl7.message", SUCCESS, actor="RIS@10.0.0.5", identifiers={...})."""
    connection.execute(
        _INSERT, _row(AuditEvent(kind, outcome, actor, identifiers, duration_ms, detail), dt.datetime.now(dt.timezone.utc))
    )


# Built once: an `insert().values(...)` built per event is cache-keyed anew each time (~0.2 ms of CPU; the
# pipeline writes four or five events a report). Every column but the key is always given, so the one
# compiled form serves every call.
_INSERT = audit_events.insert()


@dataclass(frozen=True)
class AuditEvent:
    """One event for `record_many`; the fields mean what `record`'s arguments mean."""

    kind: str
    outcome: str
    actor: str | None = None
    identifiers: Mapping[str, object] | None = None
    duration_ms: float | None = None
    detail: str | None = None
    # When it happened, for an event written after the fact (e.g. an ACK); None: when it is written.
    at: dt.datetime | None = None


def record_many(connection: Connection, events: Sequence[AuditEvent]) -> None:
    """Append several events with one executemany (e.g. a group commit of received instances)."""
    if events:
        now = dt.datetime.now(dt.timezone.utc)
        connection.execute(_INSERT, [_row(event, now) for event in events])


@dataclass(frozen=True)
class DriverAudit:
    """`record_many` compiled once for a dialect and run on the DBAPI cursor of the caller's transaction
    (daemon/store/driver.py): for HL7 intake, which writes audit rows for every message. Same rows."""

    insert: DriverStatement

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> DriverAudit:
        return cls(DriverStatement.compile(_INSERT, dialect, _KEYS))

    def record_many(self, cursor: Any, events: Sequence[AuditEvent]) -> None:
        """`record_many(connection, events)`, on `cursor` (from `driver.cursor_of(connection)`)."""
        if events:
            now = dt.datetime.now(dt.timezone.utc)
            self.insert.executemany(cursor, [_row(event, now) for event in events])


_KEYS = ("at", "kind", "outcome", "actor", "identifiers", "duration_ms", "detail")


def _row(event: AuditEvent, at: dt.datetime) -> dict[str, Any]:
    return {
        "at": event.at or at,
        "kind": event.kind,
        "outcome": event.outcome,
        "actor": event.actor,
        "identifiers": {key: value for key, value in (event.identifiers or {}).items() if value is not None},
        "duration_ms": event.duration_ms,
        "detail": event.detail[:4000] if event.detail else None,
    }
