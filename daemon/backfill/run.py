"""`neurolabel backfill FILE`: label a file of historic reports through Triton, link them to indexed studies.

The file is read twice: once to check it whole (a bad line stops the run before anything is written, with
exit code 2 and the line named) and count it for the progress bar, then in batches of `--batch`. Each
batch goes through three steps:

1. plan (database read): reports an earlier run already stored (source "backfill" and the same external
   id) are skipped as done; reports whose accession already has a report from HL7 intake are skipped
   (the live report is the record);
2. classify through Triton, in requests of PART reports with PARTS_IN_FLIGHT requests in flight; the
   next batch's requests go out while the previous batch is written (BATCHES_IN_FLIGHT), so Triton is
   kept busy; a request Triton cannot answer is tried again alone (for about three minutes);
3. store, in file order and in one transaction per batch: the report (a later report of the same
   accession supersedes an earlier backfilled one, as a correction does), its prediction, its audit
   rows, and its link to the studies already indexed (daemon/work/link_jobs.link_report: the same
   decisions as the daemon; labelling a stable study queues its write-back for the running daemon,
   and a report whose study is not there yet is parked and linked when the study arrives).

A report is stored only together with its prediction and link, so an interrupted run (Ctrl-C, SIGTERM,
kill -9, power loss) leaves whole batches or nothing: running the same command again skips what is done
and carries on; no report, prediction or labels row is ever written twice (a unique index on
(source, external_id) backs this up).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import hashlib
import itertools
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import Connection

from daemon.audit import trail
from daemon.audit.events import classified_event
from daemon.audit.redact import error_summary
from daemon.backfill.sources import (
    BackfillInputError,
    BackfillReport,
    NotAReport,
    Record,
    detect_format,
    read_records,
)
from daemon.config import Config, LinkingConfig
from daemon.hl7.parse import CORRECTED, FINAL, PRELIMINARY, ParseSettings
from daemon.inference.prediction import Classifier, InferenceFailed, InferenceUnavailable, Prediction
from daemon.store.database import Database
from daemon.store.schema import reports
from daemon.work import sidecar
from daemon.work.classify import store_prediction
from daemon.work.link_jobs import link_report

log = logging.getLogger("neurolabel.backfill")

SOURCE = "backfill"
ACTIVE = "active"
SUPERSEDED = "superseded"
DEFAULT_BATCH = 256
BATCHES_IN_FLIGHT = 2
# Reports per classifier call (one Triton request), and calls in flight at once.
PART = 16
PARTS_IN_FLIGHT = 4
# While Triton cannot answer, a batch is tried again after these pauses; then the run stops (resumable).
UNAVAILABLE_PAUSES = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 30.0, 30.0, 30.0, 30.0)
AUDIT_STARTED = "backfill.started"
AUDIT_FINISHED = "backfill.finished"
AUDIT_REPORT = "report.stored"


class BackfillStopped(Exception):
    """The run stopped before the end (Triton gone, interrupted); what is done stays done."""

    def __init__(self, reason: str, counts: BackfillCounts) -> None:
        super().__init__(reason)
        self.counts = counts


@dataclass
class BackfillCounts:
    total: int = 0  # records in the file
    read: int = 0  # records handled so far
    done_before: int = 0  # stored by an earlier run
    already_reported: int = 0  # their accession has a report from HL7 intake
    not_reports: int = 0  # HL7 messages with no report, cancellations, a preliminary after the final
    classified: int = 0
    linked: int = 0
    unmatched: int = 0  # stored, no study indexed yet: parked, linked when the study arrives
    failed: int = 0
    writebacks_queued: int = 0
    seconds: float = 0.0
    model: str = ""

    @property
    def throughput(self) -> float:
        return self.classified / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        """The summary a person reads at the end."""
        return [
            f"read {self.read} of {self.total} record(s)",
            f"  skipped as done (earlier run): {self.done_before}",
            f"  skipped (accession already reported over HL7): {self.already_reported}",
            f"  skipped (no report in the message, cancellation): {self.not_reports}",
            f"  classified: {self.classified} with {self.model or '-'}",
            f"    linked to an indexed study: {self.linked} ({self.writebacks_queued} write-back(s) queued)",
            f"    unmatched (no study indexed yet; linked when it arrives): {self.unmatched}",
            f"  failed: {self.failed}",
            f"throughput: {self.throughput:.1f} reports/s ({self.classified} in {self.seconds:.1f} s)",
        ]


@dataclass(frozen=True)
class _Planned:
    todo: tuple[BackfillReport, ...]
    handled: int  # records of the batch, todo included


@dataclass(frozen=True)
class _Classified:
    planned: _Planned
    predictions: tuple[Prediction | None, ...]  # None: this report could not be classified
    seconds: float


class Backfill:
    """Runs the three steps over an iterable of records (see the module docstring)."""

    def __init__(
        self,
        database: Database,
        linking: LinkingConfig,
        classifier: Classifier,
        *,
        batch_size: int = DEFAULT_BATCH,
        in_flight: int = BATCHES_IN_FLIGHT,
        on_progress: Callable[[BackfillCounts], None] | None = None,
        pauses: Sequence[float] = UNAVAILABLE_PAUSES,
    ) -> None:
        self._database = database
        self._linking = linking
        self._classifier = classifier
        self._batch_size = batch_size
        self._in_flight = in_flight
        self._on_progress = on_progress or (lambda counts: None)
        self._pauses = tuple(pauses)
        self.counts = BackfillCounts()
        self._thresholds: dict[str, float] | None = None
        self._requests = asyncio.Semaphore(PARTS_IN_FLIGHT)

    async def run(self, records: Iterable[Record], total: int) -> BackfillCounts:
        counts = self.counts
        counts.total = total
        info = await self._classifier.model_info()
        counts.model, self._thresholds = info.model, dict(info.thresholds) or None
        started = time.perf_counter()
        batches = _batches(records, self._batch_size)
        pending: collections.deque[asyncio.Task[_Classified]] = collections.deque()
        try:
            while True:
                batch = await asyncio.to_thread(next, batches, None)
                if batch is None:
                    break
                planned = await asyncio.to_thread(self._plan, batch)
                pending.append(asyncio.create_task(self._classify(planned)))
                if len(pending) >= self._in_flight:
                    await self._store(await pending.popleft())
                    counts.seconds = time.perf_counter() - started
                    self._on_progress(counts)
            while pending:
                await self._store(await pending.popleft())
                counts.seconds = time.perf_counter() - started
                self._on_progress(counts)
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            counts.seconds = time.perf_counter() - started
        return counts

    # --- 1. plan ---------------------------------------------------------------------------------

    def _plan(self, batch: Sequence[Record]) -> _Planned:
        candidates = [record for record in batch if isinstance(record, BackfillReport)]
        self.counts.not_reports += sum(1 for record in batch if isinstance(record, NotAReport))
        ids = [record.external_id for record in candidates]
        accessions = sorted({record.accession_number for record in candidates if record.accession_number})
        with self._database.connect() as connection:
            done = set(
                connection.execute(
                    sa.select(reports.c.external_id).where(reports.c.source == SOURCE, reports.c.external_id.in_(ids))
                ).scalars()
            )
            reported = set(
                connection.execute(
                    sa.select(reports.c.accession_number).where(
                        reports.c.accession_number.in_(accessions),
                        reports.c.state == ACTIVE,
                        reports.c.source != SOURCE,
                    )
                ).scalars()
            ) if accessions else set()
        todo = []
        for record in candidates:
            if record.external_id in done:
                self.counts.done_before += 1
            elif record.accession_number in reported:
                self.counts.already_reported += 1
            elif not record.text.strip():
                self.counts.failed += 1
                log.warning("line %d, id %s: empty report text", record.line, record.external_id)
            else:
                todo.append(record)
        return _Planned(tuple(todo), len(batch))

    # --- 2. classify -------------------------------------------------------------------------------

    async def _classify(self, planned: _Planned) -> _Classified:
        """The batch as parts of PART reports, PARTS_IN_FLIGHT at a time (across batches): few enough that no
        request waits in Triton's queue past its deadline on a slow host, and a part that fails is tried
        again alone, not the whole batch."""
        started = time.perf_counter()
        records = planned.todo
        parts = [records[i : i + PART] for i in range(0, len(records), PART)]
        results = await asyncio.gather(*(self._part(part) for part in parts))
        predictions = tuple(prediction for part in results for prediction in part)
        return _Classified(planned, predictions, time.perf_counter() - started)

    async def _part(self, records: Sequence[BackfillReport]) -> list[Prediction | None]:
        try:
            async with self._requests:
                return list(await self._while_available(lambda: self._classifier.classify([r.text for r in records])))
        except InferenceFailed:
            if len(records) == 1:
                record = records[0]
                log.warning("line %d, id %s: not classified", record.line, record.external_id)
                return [None]
        # One report the model cannot take must not cost the others: classify them one by one.
        return [prediction for record in records for prediction in await self._part([record])]

    async def _while_available(self, call: Callable[[], object]) -> list[Prediction]:
        for pause in (*self._pauses, None):
            try:
                return await call()  # type: ignore[misc, no-any-return]
            except InferenceUnavailable as exc:
                if pause is None:
                    raise BackfillStopped(f"Triton stopped answering: {exc}", self.counts) from None
                log.warning("Triton unavailable, trying again in %.0f s: %s", pause, exc)
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    # --- 3. store ----------------------------------------------------------------------------------

    async def _store(self, classified: _Classified) -> None:
        await asyncio.to_thread(self._store_batch, classified)
        self.counts.read += classified.planned.handled

    def _store_batch(self, classified: _Classified) -> None:
        items = [
            (record, prediction)
            for record, prediction in zip(classified.planned.todo, classified.predictions)
            if prediction is not None
        ]
        self.counts.failed += len(classified.planned.todo) - len(items)
        if not items:
            return
        batch_ms = classified.seconds * 1000
        try:
            with self._database.begin() as connection:
                outcomes = [self._store_one(connection, record, prediction, len(items), batch_ms)
                            for record, prediction in items]
        except Exception as exc:
            log.warning("batch of %d not stored (%s); storing its reports one at a time",
                        len(items), error_summary(exc))
            outcomes = [self._store_alone(record, prediction, len(items), batch_ms) for record, prediction in items]
        for outcome, queued in outcomes:
            setattr(self.counts, outcome, getattr(self.counts, outcome) + 1)
            if outcome in ("linked", "unmatched"):
                self.counts.classified += 1
            self.counts.writebacks_queued += queued

    def _store_alone(
        self, record: BackfillReport, prediction: Prediction, batch_size: int, batch_ms: float
    ) -> tuple[str, int]:
        try:
            with self._database.begin() as connection:
                return self._store_one(connection, record, prediction, batch_size, batch_ms)
        except sa.exc.IntegrityError:
            return "done_before", 0  # another run stored it meanwhile (unique source + external id)
        except Exception as exc:
            log.warning("line %d, id %s: not stored: %s", record.line, record.external_id, error_summary(exc))
            return "failed", 0

    def _store_one(
        self, connection: Connection, record: BackfillReport, prediction: Prediction, batch_size: int, batch_ms: float
    ) -> tuple[str, int]:
        """Store one classified report and link it; returns (counter to increase, write-backs queued)."""
        active = []
        if record.accession_number:
            active = connection.execute(
                sa.select(reports.c.id, reports.c.source, reports.c.result_status)
                .where(reports.c.accession_number == record.accession_number, reports.c.state == ACTIVE)
                .order_by(reports.c.id)
            ).all()
        if any(row.source != SOURCE for row in active):
            return "already_reported", 0
        if record.result_status == PRELIMINARY and any(row.result_status in (FINAL, CORRECTED) for row in active):
            return "not_reports", 0
        if active:
            connection.execute(
                reports.update().where(reports.c.id.in_([row.id for row in active])).values(state=SUPERSEDED)
            )
        now = dt.datetime.now(dt.timezone.utc)
        supersedes = active[-1].id if active else None
        report_id = int(
            connection.execute(
                reports.insert().values(
                    source=SOURCE,
                    external_id=record.external_id,
                    accession_number=record.accession_number,
                    study_instance_uid=record.study_instance_uid,
                    patient_id=record.patient_id,
                    issuer_of_patient_id=record.issuer_of_patient_id,
                    patient_name=record.patient_name,
                    patient_identifiers=list(record.patient_identifiers) or None,
                    modality=record.modality,
                    procedure=record.procedure,
                    result_status=record.result_status,
                    observation_time=record.observation_time,
                    text=record.text,
                    state=ACTIVE,
                    supersedes_id=supersedes,
                    created_at=now,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
        )
        trail.record(
            connection,
            AUDIT_REPORT,
            trail.SUCCESS,
            actor=SOURCE,
            identifiers={
                "report_id": report_id,
                "source": SOURCE,
                "external_id": record.external_id,
                "accession_number": record.accession_number,
                "study_instance_uid": record.study_instance_uid,
                "state": ACTIVE,
                "supersedes_id": supersedes,
            },
        )
        prediction_id = store_prediction(connection, report_id, prediction, self._thresholds, now)
        event = classified_event(report_id, prediction_id, prediction.model, batch_size, batch_ms, source=SOURCE)
        trail.record_many(connection, [event])
        row = connection.execute(sa.select(reports).where(reports.c.id == report_id)).one()
        queued = link_report(connection, row, self._linking, now)
        linked = bool(sidecar.linked_study_uids(connection, report_id))
        return ("linked" if linked else "unmatched"), len(queued)


def _batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    iterator = iter(records)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


# --- the command -------------------------------------------------------------------------------------


def hl7_settings(config: Config) -> ParseSettings:
    settings = config.hl7
    return ParseSettings.build(settings.accepted_message_types, settings.accession_fields, settings.default_charset)


def check_file(path: Path, fmt: str, settings: ParseSettings) -> int:
    """Read the whole file once (BackfillInputError at the first bad line); returns its number of records."""
    return sum(1 for _ in read_records(path, fmt, settings))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class BackfillFile:
    """A file checked whole: its format and number of records."""

    path: Path
    fmt: str
    total: int
    settings: ParseSettings


def check_backfill_file(config: Config, path: Path, fmt: str | None = None) -> BackfillFile:
    """Detect the format and read the file once; BackfillInputError names the first bad line."""
    fmt = detect_format(path, fmt)
    settings = hl7_settings(config)
    return BackfillFile(path, fmt, check_file(path, fmt, settings), settings)


def run_backfill(
    config: Config,
    database: Database,
    source: Path | BackfillFile,
    *,
    fmt: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[BackfillCounts], None] | None = None,
    classifier_factory: Callable[[Config], AsyncIterator[Classifier]] | None = None,
) -> BackfillCounts:
    """The whole command: check the file, classify and store it, audit the run. Raises BackfillStopped
    (with the counts so far) when interrupted or when Triton stays away; BackfillInputError for a bad file."""
    checked = source if isinstance(source, BackfillFile) else check_backfill_file(config, source, fmt)
    path, fmt, total, settings = checked.path, checked.fmt, checked.total, checked.settings
    identifiers = {"file": str(path.resolve()), "sha256": file_sha256(path), "format": fmt, "records": total}
    with database.begin() as connection:
        trail.record(connection, AUDIT_STARTED, trail.SUCCESS, actor=SOURCE, identifiers=identifiers)
    log.info("backfill of %s (%s, %d records) started", path, fmt, total)
    runner: Backfill | None = None

    async def main() -> BackfillCounts:
        nonlocal runner
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)  # `kill`: stop like Ctrl-C, at a batch boundary
        factory = classifier_factory or _triton
        async with factory(config) as classifier:  # type: ignore[attr-defined]
            runner = Backfill(database, config.linking, classifier, batch_size=batch_size, on_progress=progress)
            return await runner.run(read_records(path, fmt, settings), total)

    started = time.perf_counter()
    try:
        counts = asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        counts = runner.counts if runner is not None else BackfillCounts(total=total)
        _audit_finished(database, identifiers, counts, started, "interrupted")
        raise BackfillStopped("interrupted", counts) from None
    except BackfillStopped as exc:
        _audit_finished(database, identifiers, exc.counts, started, str(exc))
        raise
    except Exception as exc:  # the file changed under us, the database went away, ...: what is stored stays
        counts = runner.counts if runner is not None else BackfillCounts(total=total)
        reason = str(exc) if isinstance(exc, BackfillInputError) else error_summary(exc)
        log.error("backfill stopped: %s", reason)
        _audit_finished(database, identifiers, counts, started, reason)
        if isinstance(exc, (BackfillInputError, sa.exc.SQLAlchemyError)):
            raise BackfillStopped(reason, counts) from exc
        raise  # Triton could not be started or reached, ...: the command says so
    _audit_finished(database, identifiers, counts, started, None)
    log.info("backfill of %s finished: %d classified, %.1f reports/s", path, counts.classified, counts.throughput)
    return counts


def _triton(config: Config) -> AsyncIterator[Classifier]:
    """The classifier `neurolabel classify` uses: [triton] url, a running bundled server, or one started now."""
    from daemon.inference.classify_file import triton_classifier

    return triton_classifier(config)  # type: ignore[return-value]


def _audit_finished(
    database: Database, identifiers: dict[str, object], counts: BackfillCounts, started: float, stopped: str | None
) -> None:
    summary = {key: value for key, value in dataclasses.asdict(counts).items() if key not in ("seconds",)}
    try:
        with database.begin() as connection:
            trail.record(
                connection,
                AUDIT_FINISHED,
                trail.FAILURE if stopped else trail.SUCCESS,
                actor=SOURCE,
                identifiers={**identifiers, **summary, "reports_per_second": round(counts.throughput, 2)},
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
                detail=f"stopped: {stopped}; run again to resume" if stopped else None,
            )
    except Exception as exc:  # the database may be what stopped the run
        log.warning("the end of the backfill could not be audited: %s", error_summary(exc))
