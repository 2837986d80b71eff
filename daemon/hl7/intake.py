"""The durable part of HL7 intake: messages of one batch are parsed, stored and committed together, then acknowledged.

`Intake.handle_batch` runs in the listener's writer thread. Each message is
parsed (pure), then the whole batch is written in one transaction (group
commit: one fsync for every message that arrived together), and only then
are the ACKs built. Within the transaction, per message:

- rejected (bad header, sender not allowed, bad content, oversize): the raw
  bytes are kept with the reason, for review and `neurolabel hl7 reprocess`;
- a repeated MSH-10 from the same sender with the same content: re-acknowledged,
  recorded as a duplicate, no second report; with other content: AE 205;
- accepted: the raw message, one report per order (accession), a `classify`
  job per report; a correction supersedes the active report of its accession,
  a cancellation withdraws it (and queues `withdraw`); a preliminary never
  replaces a final;
- an audit row for every message.

If the batch transaction fails, each message is retried in its own
transaction, so one bad message cannot cost the others their ACK.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import Dialect

from daemon.audit import trail
from daemon.hl7.ack import acknowledgement_codes, build_ack
from daemon.hl7.charsets import encode_reply
from daemon.hl7.codes import AckCode, ErrorCode, Location, Problem
from daemon.hl7.parse import (
    CANCELLED,
    CORRECTED,
    FINAL,
    PRELIMINARY,
    Header,
    Message,
    MessageProblem,
    ParseSettings,
    Report,
    parse_message,
    peek_header,
)
from daemon.store.database import Database
from daemon.store.driver import DriverStatement, cursor_of
from daemon.store.queue import DriverEnqueue
from daemon.store.schema import hl7_messages, reports

log = logging.getLogger("neurolabel.hl7.intake")

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
REJECTED = "rejected"
IGNORED = "ignored"  # an ACK sent to us: never answered, not stored
FAILED = "failed"  # could not be stored at all: answered AR 207, the sender must resend

ACTIVE = "active"
SUPERSEDED = "superseded"
WITHDRAWN = "withdrawn"

CLASSIFY_JOB = "classify"
WITHDRAW_JOB = "withdraw"
AUDIT_KIND = "hl7.message"
AUDIT_REPORT = "report.stored"
AUDIT_REPROCESS = "reprocess.hl7"

# Statements built once: building a Core statement costs more than running it (~150 us against ~30 us).
# Shaped for the indexes: the partial unique index on (application, facility, control id) WHERE status =
# 'accepted' (the literal lets SQLite and PostgreSQL match the index predicate), and the accession index
# (state is filtered here: with it in the query, SQLite would pick the low-selectivity state index).
# One look-up per control id (and one per accession): all three columns equal make the unique index the only
# plan. With `control_id IN (...)` of a batch (5 or more ids), SQLite, which has no statistics, picked
# ix_hl7_messages_status instead and read every accepted message: 1.3 ms a batch at 3,000 messages,
# growing with the table.
_ACCEPTED_FROM_SENDER = sa.select(hl7_messages.c.id, hl7_messages.c.content_hash).where(
    hl7_messages.c.sending_application == sa.bindparam("application"),
    hl7_messages.c.sending_facility == sa.bindparam("facility"),
    hl7_messages.c.control_id == sa.bindparam("control_id"),
    hl7_messages.c.status == sa.literal_column(f"'{ACCEPTED}'"),
)
_REPORTS_WITH_ACCESSION = (
    sa.select(reports.c.id, reports.c.result_status, reports.c.state)
    .where(reports.c.accession_number == sa.bindparam("accession"))
    .order_by(reports.c.id)
)
_SET_REPORT_STATE = (
    reports.update().where(reports.c.id == sa.bindparam("report_id")).values(state=sa.bindparam("new_state"))
)
_MESSAGE_KEYS = tuple(column.key for column in hl7_messages.columns if column.key != "id")
_REPORT_KEYS = tuple(column.key for column in reports.columns if column.key != "id")


@dataclass(frozen=True)
class _Statements:
    """The statements intake runs for every message, compiled once for the database's dialect and run on the DBAPI
    cursor of the batch's transaction (daemon/store/driver.py): SQLAlchemy's own execution of a cached statement
    cost ~0.1 ms, more than SQLite's work for it, and each message runs four or five. Rare writes (a correction's
    state change) still go through SQLAlchemy on the same connection."""

    accepted_from_sender: DriverStatement
    reports_with_accession: DriverStatement
    insert_message: DriverStatement
    insert_report: DriverStatement
    jobs: DriverEnqueue
    audit: trail.DriverAudit

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> _Statements:
        return cls(
            DriverStatement.compile(_ACCEPTED_FROM_SENDER, dialect),
            DriverStatement.compile(_REPORTS_WITH_ACCESSION, dialect),
            DriverStatement.insert_returning_id(hl7_messages, dialect, _MESSAGE_KEYS),
            DriverStatement.insert_returning_id(reports, dialect, _REPORT_KEYS),
            DriverEnqueue.for_dialect(dialect),
            trail.DriverAudit.for_dialect(dialect),
        )


@dataclass(frozen=True)
class Received:
    """One frame as it came off the wire."""

    payload: bytes
    peer: str
    received_at: dt.datetime
    # The frame's full size when it exceeded the limit (payload then holds only its first bytes).
    oversize: int | None = None


@dataclass(frozen=True)
class Outcome:
    status: str
    header: Header | None
    problem: Problem | None = None
    message_id: int | None = None
    report_ids: tuple[int, ...] = ()
    superseded_ids: tuple[int, ...] = ()
    withdrawn_ids: tuple[int, ...] = ()
    accessions: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def queued_kinds(self) -> set[str]:
        kinds = set()
        if self.report_ids:
            kinds.add(CLASSIFY_JOB)
        if self.withdrawn_ids:
            kinds.add(WITHDRAW_JOB)
        return kinds


@dataclass(frozen=True)
class Handled:
    """What the listener sends back (encoded ACKs, unframed) and logs."""

    outcome: Outcome
    acks: tuple[bytes, ...]
    ack_codes: tuple[AckCode, ...]
    parse_ms: float
    store_ms: float


@dataclass(frozen=True)
class SenderPolicy:
    """Allowed MSH-3^MSH-4 pairs ("APP^FACILITY", or "APP" for any facility); empty allows every sender."""

    allowed: tuple[tuple[str, str | None], ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> SenderPolicy:
        pairs = []
        for entry in entries:
            application, _, facility = entry.strip().partition("^")
            pairs.append((application.strip().upper(), facility.strip().upper() or None))
        return cls(tuple(pairs))

    def check(self, header: Header) -> Problem | None:
        if not self.allowed:
            return None
        application, facility = (part.strip().upper() for part in header.sender_parts())
        for allowed_application, allowed_facility in self.allowed:
            if application == allowed_application and allowed_facility in (None, facility):
                return None
        known_application = any(application == a for a, _ in self.allowed)
        position = 4 if known_application else 3
        return Problem(
            ErrorCode.TABLE_VALUE_NOT_FOUND,
            f"sender {application or '(empty)'}^{facility or '(empty)'} is not allowed to send here",
            Location("MSH", 1, position),
            reject=True,
        )


class ControlIds:
    """MSH-10 for our ACKs: unique per process start, at most 20 characters (the 2.3 to 2.5 limit)."""

    def __init__(self, start: float | None = None) -> None:
        seconds = int(start if start is not None else time.time())
        self._prefix = "NL" + _base36(seconds)
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter)}"


@dataclass(frozen=True)
class _Prepared:
    received: Received
    header: Header | None
    message: Message | None
    problem: Problem | None
    parse_ms: float
    warnings: tuple[str, ...] = field(default=())


@dataclass
class _Writer:
    """One transaction of intake: what its messages need from the database, read up front (one look-up per control
    id and one per accession) and kept current as the transaction writes (so a resend or a correction later in the
    same batch sees the earlier message), and the jobs and audit rows, written together before the commit."""

    connection: Connection
    statements: _Statements
    # A DBAPI cursor in the connection's transaction, for `statements`.
    cursor: Any
    # (sending application, sending facility, control id) -> (message id, content hash) of accepted messages
    accepted: dict[tuple[str, str, str], tuple[int, str | None]]
    # accession -> [(report id, result status)] of its active reports, oldest first
    active: dict[str, list[tuple[int, str]]]
    audit: list[trail.AuditEvent] = field(default_factory=list)
    # (kind, key, payload) of the jobs to queue, in order: one statement for the batch at `flush`
    jobs: list[tuple[str, str, dict[str, int]]] = field(default_factory=list)

    @classmethod
    def open(cls, connection: Connection, statements: _Statements, batch: Sequence[_Prepared]) -> _Writer:
        messages = [p.message for p in batch if p.message is not None and p.problem is None]
        keys = sorted({_sender_key(message.header) for message in messages})
        accessions = sorted({r.accession_number for m in messages for r in m.reports if r.accession_number})
        cursor = cursor_of(connection)
        accepted: dict[tuple[str, str, str], tuple[int, str | None]] = {}
        active: dict[str, list[tuple[int, str]]] = {}
        lookup = statements.accepted_from_sender
        for application, facility, control_id in keys:
            parameters = {"application": application, "facility": facility, "control_id": control_id}
            row = lookup.execute(cursor, parameters).fetchone()
            if row is not None:
                accepted[(application, facility, control_id)] = (row[0], row[1])
        for accession in accessions:
            for report_id, result_status, state in statements.reports_with_accession.execute(
                cursor, {"accession": accession}
            ).fetchall():
                if state == ACTIVE:
                    active.setdefault(accession, []).append((report_id, result_status))
        return cls(connection, statements, cursor, accepted, active)

    def flush(self) -> None:
        self.statements.jobs.enqueue_many(self.cursor, self.jobs)
        self.jobs.clear()
        self.statements.audit.record_many(self.cursor, self.audit)
        self.audit.clear()
        self.cursor.close()


def _sender_key(header: Header) -> tuple[str, str, str]:
    return header.sending_application[:227], header.sending_facility[:227], header.control_id


class Intake:
    def __init__(
        self,
        database: Database,
        settings: ParseSettings,
        senders: SenderPolicy,
        max_message_bytes: int,
        control_ids: ControlIds | None = None,
    ) -> None:
        self._database = database
        self._settings = settings
        self._senders = senders
        self._max_message_bytes = max_message_bytes
        self._control_ids = control_ids or ControlIds()
        self._statements = _Statements.for_dialect(database.engine.dialect)

    def handle_batch(self, items: Sequence[Received]) -> list[Handled]:
        """Parse, store and commit a batch; return one Handled per item, in order. Never raises for one bad item."""
        prepared = [self._prepare(item) for item in items]
        started = time.perf_counter()
        storable = [p for p in prepared if not _is_ack(p)]
        try:
            with self._database.begin() as connection:
                writer = _Writer.open(connection, self._statements, storable)
                stored = {id(p): self._store(writer, p) for p in storable}
                writer.flush()
        except Exception as exc:
            log.error(
                "batch of %d messages failed (%s); storing them one at a time", len(storable), describe_error(exc)
            )
            stored = {id(p): self._store_alone(p) for p in storable}
        store_ms = (time.perf_counter() - started) * 1000
        now = dt.datetime.now().astimezone()
        results = []
        for p in prepared:
            outcome = stored.get(id(p)) or Outcome(IGNORED, p.header)
            results.append(self._reply(p, outcome, now, store_ms))
        return results

    def reprocess(self, message_ids: Sequence[int]) -> list[tuple[int, Outcome]]:
        """Run kept (rejected) messages through intake again, e.g. after the configuration was fixed."""
        with self._database.connect() as connection:
            rows = connection.execute(
                sa.select(hl7_messages.c.id, hl7_messages.c.raw, hl7_messages.c.peer, hl7_messages.c.status).where(
                    hl7_messages.c.id.in_(list(message_ids))
                )
            ).all()
        results = []
        for row in rows:
            if row.status != REJECTED:
                continue
            received = Received(bytes(row.raw), f"reprocess:{row.id}:{row.peer}"[:128], _utcnow())
            handled = self.handle_batch([received])[0]
            with self._database.begin() as connection:
                connection.execute(
                    hl7_messages.update().where(hl7_messages.c.id == row.id).values(reprocessed_at=_utcnow())
                )
                outcome = handled.outcome
                trail.record(
                    connection,
                    AUDIT_REPROCESS,
                    trail.SUCCESS if outcome.status in (ACCEPTED, DUPLICATE) else trail.FAILURE,
                    identifiers={"message_id": row.id, "new_message_id": outcome.message_id, "status": outcome.status},
                )
            results.append((row.id, handled.outcome))
        return results

    # --- parsing -------------------------------------------------------------

    def _prepare(self, item: Received) -> _Prepared:
        started = time.perf_counter()
        message: Message | None = None
        header: Header | None = None
        problem: Problem | None = None
        if item.oversize is not None:
            header = peek_header(item.payload, self._settings.default_charset)
            problem = Problem(
                ErrorCode.APPLICATION_INTERNAL_ERROR,
                f"message of {item.oversize} bytes exceeds the maximum of {self._max_message_bytes}",
                reject=True,
            )
        else:
            try:
                message = parse_message(item.payload, self._settings)
                header = message.header
            except MessageProblem as exc:
                header, problem = exc.header, exc.problem
            except Exception as exc:  # a parser bug must cost one message, never the connection
                log.error("unexpected error parsing a message from %s: %s", item.peer, describe_error(exc))
                header = peek_header(item.payload, self._settings.default_charset)
                problem = Problem(
                    ErrorCode.APPLICATION_INTERNAL_ERROR, f"message could not be read ({type(exc).__name__})"
                )
        if header is not None and (problem is None or not problem.reject):
            refused = self._senders.check(header)
            if refused is not None:
                problem = refused
        elapsed = (time.perf_counter() - started) * 1000
        return _Prepared(
            item, header, message if problem is None else None, problem, elapsed, message.warnings if message else ()
        )

    # --- storing -------------------------------------------------------------

    def _store_alone(self, prepared: _Prepared) -> Outcome:
        try:
            with self._database.begin() as connection:
                writer = _Writer.open(connection, self._statements, [prepared])
                outcome = self._store(writer, prepared)
                writer.flush()
                return outcome
        except Exception as exc:
            log.error("message from %s could not be stored: %s", prepared.received.peer, describe_error(exc))
            problem = Problem(
                ErrorCode.APPLICATION_INTERNAL_ERROR,
                f"could not be stored ({type(exc).__name__}); resend later",
                reject=True,
            )
        try:
            with self._database.begin() as connection:
                writer = _Writer.open(connection, self._statements, [])
                outcome = self._reject(writer, prepared, problem)
                writer.flush()
                return outcome
        except Exception as exc:
            log.error(
                "rejected message from %s could not be kept either: %s", prepared.received.peer, describe_error(exc)
            )
            return Outcome(FAILED, prepared.header, problem)

    def _store(self, writer: _Writer, prepared: _Prepared) -> Outcome:
        if prepared.problem is not None or prepared.message is None:
            problem = prepared.problem or Problem(ErrorCode.APPLICATION_INTERNAL_ERROR, "message not read", reject=True)
            return self._reject(writer, prepared, problem)
        message = prepared.message
        header = message.header
        earlier = writer.accepted.get(_sender_key(header))
        if earlier is not None:
            earlier_id, earlier_hash = earlier
            if earlier_hash == message.content_hash:
                return self._duplicate(writer, prepared, earlier_id)
            problem = Problem(
                ErrorCode.DUPLICATE_KEY_IDENTIFIER,
                f"MSH-10 {header.control_id} was already accepted from this sender with other content",
                Location("MSH", 1, 10),
            )
            return self._reject(writer, prepared, problem)
        message_id = self._insert_message(writer, prepared, ACCEPTED, AckCode.APPLICATION_ACCEPT)
        writer.accepted[_sender_key(header)] = (message_id, message.content_hash)
        report_ids: list[int] = []
        superseded: list[int] = []
        withdrawn: list[int] = []
        notes = list(message.warnings)
        if message.status_only:
            notes.append(f"result status {message.status_only}: an order status, no report")
        for report in message.reports:
            self._apply_report(writer, message, message_id, report, report_ids, superseded, withdrawn, notes)
        outcome = Outcome(
            ACCEPTED,
            header,
            message_id=message_id,
            report_ids=tuple(report_ids),
            superseded_ids=tuple(superseded),
            withdrawn_ids=tuple(withdrawn),
            accessions=tuple(r.accession_number for r in message.reports if r.accession_number),
            warnings=tuple(notes),
        )
        self._audit(writer, prepared, outcome, trail.SUCCESS, "; ".join(notes) or None)
        return outcome

    def _apply_report(
        self,
        writer: _Writer,
        message: Message,
        message_id: int,
        report: Report,
        report_ids: list[int],
        superseded: list[int],
        withdrawn: list[int],
        notes: list[str],
    ) -> None:
        connection = writer.connection
        accession = report.accession_number
        active = writer.active.get(accession, []) if accession else []
        if report.result_status == CANCELLED:
            if not active:
                notes.append(f"cancellation of accession {accession}: no active report to withdraw")
            for active_id, _status in active:
                connection.execute(_SET_REPORT_STATE, {"report_id": active_id, "new_state": WITHDRAWN})
                writer.jobs.append((WITHDRAW_JOB, f"report:{active_id}", {"report_id": active_id}))
                withdrawn.append(active_id)
            if accession:
                writer.active[accession] = []
            return
        if report.result_status == PRELIMINARY and any(status in (FINAL, CORRECTED) for _id, status in active):
            # Out of order: a preliminary after the final is history, not the current report.
            self._insert_report(writer, message, message_id, report, SUPERSEDED, None)
            notes.append(f"preliminary report for accession {accession} after its final: kept as history")
            return
        report_id = self._insert_report(writer, message, message_id, report, ACTIVE, active[-1][0] if active else None)
        for active_id, _status in active:
            connection.execute(_SET_REPORT_STATE, {"report_id": active_id, "new_state": SUPERSEDED})
            superseded.append(active_id)
        if accession:
            writer.active[accession] = [(report_id, report.result_status)]
        writer.jobs.append((CLASSIFY_JOB, f"report:{report_id}", {"report_id": report_id}))
        report_ids.append(report_id)

    def _insert_report(
        self, writer: _Writer, message: Message, message_id: int, report: Report, state: str, supersedes: int | None
    ) -> int:
        patient = message.patient
        primary = patient.primary
        identifiers = [{"id": i.value, "authority": i.authority, "type": i.type_code} for i in patient.identifiers]
        report_id = writer.statements.insert_report.insert(
            writer.cursor,
            {
                "message_id": message_id,
                "source": "hl7",
                "external_id": message.header.control_id,
                "accession_number": report.accession_number,
                "study_instance_uid": report.study_instance_uid,
                "patient_id": primary.value if primary else None,
                "issuer_of_patient_id": (primary.authority or None) if primary else None,
                "patient_identifiers": identifiers or None,
                "patient_name": patient.name,
                "modality": report.modality,
                "procedure": report.procedure,
                "result_status": report.result_status,
                "observation_time": report.observation_time,
                "text": report.text,
                "state": state,
                "supersedes_id": supersedes,
                "created_at": _utcnow(),
            },
        )
        writer.audit.append(
            trail.AuditEvent(
                AUDIT_REPORT,
                trail.SUCCESS,
                identifiers={
                    "report_id": report_id,
                    "message_id": message_id,
                    "source": "hl7",
                    "accession_number": report.accession_number,
                    "study_instance_uid": report.study_instance_uid,
                    "result_status": report.result_status,
                    "state": state,
                    "supersedes_id": supersedes,
                },
            )
        )
        return report_id

    def _duplicate(self, writer: _Writer, prepared: _Prepared, earlier_id: int) -> Outcome:
        message_id = self._insert_message(
            writer, prepared, DUPLICATE, AckCode.APPLICATION_ACCEPT, duplicate_of=earlier_id
        )
        outcome = Outcome(DUPLICATE, prepared.header, message_id=message_id)
        self._audit(writer, prepared, outcome, trail.DUPLICATE, f"resend of message {earlier_id}")
        return outcome

    def _reject(self, writer: _Writer, prepared: _Prepared, problem: Problem) -> Outcome:
        code = AckCode.APPLICATION_REJECT if problem.reject else AckCode.APPLICATION_ERROR
        message_id = self._insert_message(writer, prepared, REJECTED, code, problem=problem)
        outcome = Outcome(REJECTED, prepared.header, problem, message_id=message_id, warnings=prepared.warnings)
        self._audit(writer, prepared, outcome, trail.REJECTED, problem.describe())
        return outcome

    def _insert_message(
        self,
        writer: _Writer,
        prepared: _Prepared,
        status: str,
        ack_code: AckCode,
        *,
        problem: Problem | None = None,
        duplicate_of: int | None = None,
    ) -> int:
        header = prepared.header
        message = prepared.message
        received = prepared.received
        return writer.statements.insert_message.insert(
            writer.cursor,
            {
                "received_at": received.received_at,
                "peer": received.peer[:128],
                "sending_application": (header.sending_application if header else "")[:227],
                "sending_facility": (header.sending_facility if header else "")[:227],
                "control_id": (header.control_id if header else "")[:199],
                "message_type": (header.message_type if header else "")[:32],
                "version": (header.version if header else "")[:16],
                "raw": received.payload,
                "size_bytes": received.oversize or len(received.payload),
                "content_hash": message.content_hash if message else None,
                "status": status,
                "ack_code": ack_code.value,
                "error": problem.describe() if problem else None,
                "error_code": problem.code.value if problem else None,
                "duplicate_of": duplicate_of,
                "reprocessed_at": None,
            },
        )

    def _audit(self, writer: _Writer, prepared: _Prepared, outcome: Outcome, result: str, detail: str | None) -> None:
        header = prepared.header
        identifiers: dict[str, object] = {
            "control_id": header.control_id if header else None,
            "message_id": outcome.message_id,
            "message_type": header.message_type if header else None,
        }
        if outcome.accessions:
            identifiers["accession_numbers"] = list(outcome.accessions)
        if outcome.report_ids:
            identifiers["report_ids"] = list(outcome.report_ids)
        if outcome.superseded_ids:
            identifiers["superseded_report_ids"] = list(outcome.superseded_ids)
        if outcome.withdrawn_ids:
            identifiers["withdrawn_report_ids"] = list(outcome.withdrawn_ids)
        if outcome.problem is not None:
            identifiers["error_code"] = outcome.problem.code.value
        writer.audit.append(
            trail.AuditEvent(
                AUDIT_KIND,
                result,
                actor=_actor(header, prepared.received.peer),
                identifiers=identifiers,
                duration_ms=round(prepared.parse_ms, 3),
                detail=detail,
            )
        )

    # --- replies -------------------------------------------------------------

    def _reply(self, prepared: _Prepared, outcome: Outcome, now: dt.datetime, store_ms: float) -> Handled:
        if outcome.status == IGNORED:
            return Handled(outcome, (), (), prepared.parse_ms, store_ms)
        codes = acknowledgement_codes(outcome.header, outcome.problem)
        codec = outcome.header.codec if outcome.header else "ascii"
        acks = []
        for code in codes:
            ack = build_ack(outcome.header, code, self._control_ids.next(), now, outcome.problem)
            acks.append(encode_reply(ack.text, codec))
        return Handled(outcome, tuple(acks), tuple(codes), prepared.parse_ms, store_ms)


def describe_error(exc: BaseException) -> str:
    """An exception for the log without its arguments: database errors carry the SQL parameters
    (report text, patient names) and parser errors the values they choked on."""
    where = ""
    traceback = exc.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    if traceback is not None:
        where = f" at {traceback.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{traceback.tb_lineno}"
    database_error = getattr(exc, "orig", None)
    kind = type(database_error).__name__ if database_error is not None else type(exc).__name__
    return f"{type(exc).__name__} ({kind}){where}" if database_error is not None else f"{kind}{where}"


def _is_ack(prepared: _Prepared) -> bool:
    """An acknowledgement sent to us (e.g. a commit ACK for our application ACK): never answered."""
    return prepared.header is not None and prepared.header.message_code == "ACK"


def _actor(header: Header | None, peer: str) -> str:
    if header is None:
        return peer[:128]
    return f"{header.sending_application}^{header.sending_facility}@{peer}"[:128]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _base36(number: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    text = ""
    while number:
        number, remainder = divmod(number, 36)
        text = digits[remainder] + text
    return text or "0"
