"""The audit trail: one append-only row per thing that happened, written in the caller's transaction.

Identifiers may name a study, accession or message; `detail` is for reasons and
error texts. Never put report text or patient names here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from sqlalchemy import Connection

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
        audit_events.insert().values(
            at=dt.datetime.now(dt.timezone.utc),
            kind=kind,
            outcome=outcome,
            actor=actor,
            identifiers={key: value for key, value in (identifiers or {}).items() if value is not None},
            duration_ms=duration_ms,
            detail=detail[:4000] if detail else None,
        )
    )
