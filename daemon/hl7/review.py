"""Rejected messages kept for review: list them, and run them through intake again (`neurolabel hl7 ...`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from daemon.config import Config
from daemon.hl7.intake import REJECTED, Intake, Outcome, SenderPolicy
from daemon.hl7.parse import ParseSettings
from daemon.store.database import Database
from daemon.store.schema import hl7_messages


@dataclass(frozen=True)
class Reprocessed:
    message_id: int
    status: str
    detail: str


def intake_for(config: Config, database: Database) -> Intake:
    """The intake the listener would build from this configuration."""
    settings = config.hl7
    return Intake(
        database,
        ParseSettings.build(settings.accepted_message_types, settings.accession_fields, settings.default_charset),
        SenderPolicy.parse(settings.allowed_senders),
        settings.max_message_bytes,
    )


def list_rejected(database: Database, *, include_reprocessed: bool = False, limit: int = 100) -> list[dict[str, Any]]:
    """Rejected messages, newest first: when, from whom, which MSH-10 and why (never their content)."""
    columns = (
        hl7_messages.c.id,
        hl7_messages.c.received_at,
        hl7_messages.c.peer,
        hl7_messages.c.sending_application,
        hl7_messages.c.sending_facility,
        hl7_messages.c.control_id,
        hl7_messages.c.message_type,
        hl7_messages.c.ack_code,
        hl7_messages.c.error_code,
        hl7_messages.c.error,
        hl7_messages.c.size_bytes,
        hl7_messages.c.reprocessed_at,
    )
    query = sa.select(*columns).where(hl7_messages.c.status == REJECTED)
    if not include_reprocessed:
        query = query.where(hl7_messages.c.reprocessed_at.is_(None))
    with database.connect() as connection:
        rows = connection.execute(query.order_by(hl7_messages.c.id.desc()).limit(limit)).all()
    return [
        {key: (value.isoformat() if hasattr(value, "isoformat") else value) for key, value in row._mapping.items()}
        for row in rows
    ]


def reprocess(intake: Intake, database: Database, message_ids: Sequence[int] | None) -> list[Reprocessed]:
    """Run rejected messages (the given ids, or all not yet reprocessed) through intake again."""
    if message_ids is None:
        with database.connect() as connection:
            message_ids = list(
                connection.execute(
                    sa.select(hl7_messages.c.id)
                    .where(hl7_messages.c.status == REJECTED, hl7_messages.c.reprocessed_at.is_(None))
                    .order_by(hl7_messages.c.id)
                ).scalars()
            )
    done = {message_id: _summary(message_id, outcome) for message_id, outcome in intake.reprocess(message_ids)}
    return [done.get(i) or Reprocessed(i, "skipped", "no rejected message with this id") for i in message_ids]


def _summary(message_id: int, outcome: Outcome) -> Reprocessed:
    if outcome.problem is not None:
        detail = outcome.problem.describe()
    elif outcome.report_ids:
        detail = f"reports {', '.join(map(str, outcome.report_ids))}"
    else:
        detail = "; ".join(outcome.warnings) or "accepted"
    return Reprocessed(message_id, outcome.status, detail)
