"""Write-back of a study's labels into its DICOM files, and forwarding of the result, as queued jobs.

"writeback" (payload study_instance_uid, study_label_id, optionally withdrawn):
per the [writeback] switches, rewrites every stored instance of the study with
the NEUROLABEL private block (atomically; files already carrying the same
labels are left alone), writes the study's SR (replacing the previous one:
one SR file and `instances` row per study, the new SR listing the old one as
its predecessor), records a `writebacks` row and an audit event, and queues
one "forward" job per destination of [writeback] forward_to.

Withdrawal (labels cancelled): the private block is rewritten to status
WITHDRAWN without label bits or probabilities, and the SR is replaced by a
withdrawal SR, so that downstream systems holding the old objects receive
the retraction when the study is forwarded again.

"forward" (payload destination, study_instance_uid, study_label_id): C-STORE
of the study's files as they are on disk (tagged instances, then its SR) to
the destination, each in its own transfer syntax; a failure raises, and the
runner retries it with backoff.

A labels row that is no longer the study's current one is not written (the
job of the newer row writes); write-backs of one study run one at a time in
this process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import io
import logging
import os
import re
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
import sqlalchemy as sa
from pydicom.dataset import Dataset
from sqlalchemy import Connection

from daemon.audit import trail
from daemon.config import AeAddress, Config, parse_ae_address
from daemon.dicom.forward import ForwardError, SendOutcome, send_groups
from daemon.dicom.private_tags import (
    GROUP,
    apply_label_tags,
    apply_withdrawn_tags,
    as_utc,
    carries_labels,
    encode_new_block,
)
from daemon.dicom.retag import insert_group, splice_group
from daemon.dicom.sr import COMPREHENSIVE_SR_SOP_CLASS, SERIES_DESCRIPTION, SR_SERIES_NUMBER, sr_identity
from daemon.dicom.sr_template import SrEncoder
from daemon.dicom.storage import sync_directories, sync_directory
from daemon.dicom.uids import instance_path
from daemon.labels import LabelRecord
from daemon.ops.metrics import FAILURE, SUCCESS
from daemon.store import queue
from daemon.store.database import Database
from daemon.store.driver import cursor_of
from daemon.store.locks import cluster_lock
from daemon.store.queue import Job
from daemon.store.schema import instances, study_labels
from daemon.work.runner import BatchHandler, Handler, JobFailed
from daemon.work.writeback_sql import WritebackStatements

if TYPE_CHECKING:
    from daemon.app import Services

log = logging.getLogger("neurolabel.writeback")

WRITEBACK = "writeback"
FORWARD = "forward"
ACTION_LABELS = "labels"
ACTION_WITHDRAWN = "withdrawn"
LOCK_STRIPES = 64
# Forward jobs handled together: one association per destination for all their studies.
FORWARD_BATCH_SIZE = 16
# Write-back jobs taken per claim (each still written and recorded in its own transaction).
WRITEBACK_BATCH_SIZE = 8


@dataclass(frozen=True)
class WritebackResult:
    study_instance_uid: str
    study_label_id: int
    action: str
    skipped: str = ""  # why nothing was written ("" when written)
    tagged: int = 0
    unchanged: int = 0
    sr_sop_instance_uid: str | None = None
    replaced_sr_sop_instance_uid: str | None = None
    forward_jobs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ForwardResult:
    destination: str
    sent: int
    warnings: int


@dataclass
class StudyLocks:
    """Striped locks: write-backs of one study never overlap in this process (bounded memory)."""

    stripes: list[threading.Lock] = field(default_factory=lambda: [threading.Lock() for _ in range(LOCK_STRIPES)])

    def of(self, study_instance_uid: str) -> threading.Lock:
        return self.stripes[zlib.crc32(study_instance_uid.encode()) % len(self.stripes)]


# --- job handlers ---------------------------------------------------------------------


def writeback_handlers(services: Services) -> dict[str, Handler | BatchHandler]:
    """{"writeback": ..., "forward": ...} for the JobRunner; each runs its blocking work in a thread.

    Both come in batches, two batches of a kind at most at once. A write-back batch is one claim and one
    thread hop for up to WRITEBACK_BATCH_SIZE studies, each written and recorded (its job completed) in its
    own transaction as before. The studies of a forward batch go to each destination over one association;
    each job succeeds or retries on its own, so one slow destination does not hold up every other.
    """
    locks = StudyLocks()
    encoder = SrEncoder()
    statements = WritebackStatements.for_dialect(services.database.engine.dialect)

    metrics = services.metrics

    async def handle_writebacks(jobs: Sequence[Job]) -> Mapping[int, BaseException]:
        errors = await asyncio.to_thread(run_writeback_jobs, services, jobs, locks, encoder, statements)
        for job in jobs:
            metrics.writebacks.labels(outcome=FAILURE if job.id in errors else SUCCESS).inc()
        return errors

    async def handle_forwards(jobs: Sequence[Job]) -> Mapping[int, BaseException]:
        errors = await asyncio.to_thread(run_forward_jobs, services, jobs)
        for job in jobs:
            outcome = FAILURE if job.id in errors else SUCCESS
            metrics.forwards.labels(destination=str(job.payload.get("destination", "?")), outcome=outcome).inc()
        return errors

    return {
        WRITEBACK: BatchHandler(handle_writebacks, batch_size=WRITEBACK_BATCH_SIZE, max_in_flight=2),
        FORWARD: BatchHandler(handle_forwards, batch_size=FORWARD_BATCH_SIZE, max_in_flight=2),
    }


def run_writeback_jobs(
    services: Services,
    jobs: Sequence[Job],
    locks: StudyLocks,
    encoder: SrEncoder,
    statements: WritebackStatements | None = None,
) -> dict[int, BaseException]:
    """Each job's write-back in turn; {job id: what it raised} for those that did not succeed."""
    errors: dict[int, BaseException] = {}
    for job in jobs:
        try:
            run_writeback_job(services, job, locks, encoder, statements)
        except Exception as exc:  # noqa: BLE001 - the runner retries or fails this job
            errors[job.id] = exc
    return errors


def run_writeback_job(
    services: Services,
    job: Job,
    locks: StudyLocks | None = None,
    encoder: SrEncoder | None = None,
    statements: WritebackStatements | None = None,
) -> WritebackResult:
    payload = job.payload
    try:
        study_uid = str(payload["study_instance_uid"])
        label_id = int(payload["study_label_id"])
    except (KeyError, TypeError, ValueError):
        raise JobFailed(f"writeback payload needs study_instance_uid and study_label_id, got {dict(payload)}") from None
    withdrawn = bool(payload.get("withdrawn", False))
    lock = (locks or StudyLocks()).of(study_uid)
    # The cluster lock keeps instances sharing a PostgreSQL database from rewriting one study's files at
    # once (issue 8); the in-process lock comes first so that this process's threads queue on it.
    with lock, cluster_lock(services.database, f"writeback:{study_uid}"):
        result = write_back(
            services.config, services.database, study_uid, label_id, withdrawn=withdrawn, actor=services.instance_name,
            job=job, encoder=encoder, statements=statements,
        )
    if result.forward_jobs:
        services.work_signal.notify(FORWARD)
    return result


def run_forward_jobs(services: Services, jobs: Sequence[Job]) -> dict[int, BaseException]:
    """Forward the studies of `jobs`, per destination over one association; {job id: why} for those that failed."""
    errors: dict[int, BaseException] = {}
    by_destination: dict[AeAddress, list[tuple[Job, ForwardRequest]]] = defaultdict(list)
    for job in jobs:
        payload = job.payload
        try:
            destination = parse_ae_address("forward destination", str(payload["destination"]))
            request = ForwardRequest(str(payload["study_instance_uid"]), payload.get("study_label_id"))
        except Exception as exc:  # noqa: BLE001 - a malformed payload cannot succeed later
            errors[job.id] = JobFailed(f"bad forward payload {dict(payload)}: {exc}")
            continue
        by_destination[destination].append((job, request))
    for destination, pending in by_destination.items():
        try:
            outcomes = forward_studies(
                services.config, services.database, destination, [request for _, request in pending],
                actor=services.config.writeback.calling_ae_title,
            )
        except Exception as exc:  # noqa: BLE001 - every job of the destination retries
            outcomes = [exc] * len(pending)
        for (job, _), outcome in zip(pending, outcomes):
            if isinstance(outcome, BaseException):
                errors[job.id] = outcome
    return errors


# --- write-back -----------------------------------------------------------------------


def write_back(
    config: Config,
    database: Database,
    study_instance_uid: str,
    study_label_id: int,
    *,
    withdrawn: bool = False,
    actor: str | None = None,
    job: Job | None = None,
    encoder: SrEncoder | None = None,
    statements: WritebackStatements | None = None,
) -> WritebackResult:
    """Write the labels row `study_label_id` (or its withdrawal) into the study's files, SR and queue forwards.

    Given its `job`, completes it in the transaction that records the write-back: when another instance has
    taken the job over (this one stalled past its lease), queue.LeaseLost rolls the record back (issue 8).
    `encoder` keeps the SR templates between calls and `statements` the compiled SQL (each made for the call
    when not given).
    """
    started = time.perf_counter()
    started_at = dt.datetime.now(dt.timezone.utc)
    action = ACTION_WITHDRAWN if withdrawn else ACTION_LABELS
    settings = config.writeback
    storage = config.storage.path
    sql = statements or WritebackStatements.for_dialect(database.engine.dialect)
    with database.connect() as connection:
        connection.begin()  # one read transaction for the statements below, run on its DBAPI cursor
        cursor = cursor_of(connection)
        label_row = sql.label_row.one(cursor, {"label_id": study_label_id})
        if label_row is None:
            raise JobFailed(f"labels row {study_label_id} does not exist")
        if label_row.study_instance_uid != study_instance_uid:
            raise JobFailed(f"labels row {study_label_id} belongs to another study")
        stale = _stale_reason(connection, label_row, withdrawn)
        stored = sql.stored_instances.all(cursor, {"uid": study_instance_uid})
        previous_sr = _current_sr(sql, cursor, study_instance_uid)
    if stale:
        log.info("writeback study %s labels %d skipped: %s", study_instance_uid, study_label_id, stale)
        return WritebackResult(study_instance_uid, study_label_id, action, skipped=stale)
    if not stored:
        raise RuntimeError(f"study {study_instance_uid} has no stored instances yet")
    remove_stale_temporaries(storage / study_instance_uid)

    record = label_record(label_row)
    withdrawn_at = as_utc(label_row.superseded_at or started_at) if withdrawn else None
    tagged, unchanged, sizes, evidence = _tag_instances(
        storage, stored, record, withdrawn_at, write=settings.private_tags
    )

    sr_written: _WrittenSr | None = None
    if settings.structured_report:
        sr_written = _write_sr(
            encoder or SrEncoder(), storage, record, study_label_id, evidence, previous_sr, withdrawn_at
        )

    destinations = [parse_ae_address("writeback.forward_to", text) for text in settings.forward_to]
    files = _Files(started, started_at, stored, tagged, unchanged, sizes, sr_written)
    forward_keys: list[str] = []
    with database.begin() as connection:
        if job is not None:
            queue.complete(connection, job)
        cursor = cursor_of(connection)
        # The labels may have changed while the files were written: do not record (or forward) a stale state;
        # the newer row's write-back rewrites the files.
        label_row = sql.label_row.one(cursor, {"label_id": study_label_id})
        stale = _stale_reason(connection, label_row, withdrawn) if label_row is not None else "labels row deleted"
        current_sr = _current_sr(sql, cursor, study_instance_uid) if stale else None
        if not stale:
            forward_keys = _record_writeback(
                connection, sql, cursor, record, study_label_id, action, files, destinations, actor
            )
    if stale:
        log.info("writeback study %s labels %d became stale: %s", study_instance_uid, study_label_id, stale)
        if sr_written is not None and (current_sr is None or current_sr.path != sr_written.relative_path):
            _remove_quietly(storage / sr_written.relative_path)
        return WritebackResult(study_instance_uid, study_label_id, action, skipped=stale)
    if sr_written is not None and sr_written.stale_file is not None:
        _remove_quietly(sr_written.stale_file)
    elapsed_ms = (time.perf_counter() - started) * 1000
    # DEBUG: the runner logs each batch's studies at INFO, and the audit row holds the same (a line per study
    # cost ~1 % of the daemon's CPU).
    log.debug(
        "writeback study %s labels %d %s: %d tagged, %d unchanged, SR %s, %d forward(s) in %.0f ms",
        study_instance_uid, study_label_id, action, tagged, unchanged,
        sr_written.sop_instance_uid if sr_written else "off", len(forward_keys), elapsed_ms,
    )
    return WritebackResult(
        study_instance_uid,
        study_label_id,
        action,
        tagged=tagged,
        unchanged=unchanged,
        sr_sop_instance_uid=sr_written.sop_instance_uid if sr_written else None,
        replaced_sr_sop_instance_uid=sr_written.replaced if sr_written else None,
        forward_jobs=tuple(forward_keys),
    )


@dataclass(frozen=True)
class _Files:
    """What the file work of one write-back did, for the transaction that records it."""

    started: float
    started_at: dt.datetime
    stored: Sequence[Any]
    tagged: int
    unchanged: int
    sizes: Mapping[int, int]
    sr_written: _WrittenSr | None


def _record_writeback(
    connection: Connection,
    sql: WritebackStatements,
    cursor: Any,
    record: LabelRecord,
    study_label_id: int,
    action: str,
    files: _Files,
    destinations: Sequence[AeAddress],
    actor: str | None,
) -> list[str]:
    """Sizes, the SR row, the forward jobs, the writebacks row and the audit event; returns the forward job keys."""
    study_instance_uid = record.study_instance_uid
    withdrawn = action == ACTION_WITHDRAWN
    sr_written = files.sr_written
    forward_keys: list[str] = []
    grown = _record_sizes(sql, cursor, files.stored, files.sizes)
    if sr_written is not None:
        _record_sr(sql, cursor, study_instance_uid, sr_written, grown)
    elif grown:
        sql.grow_study.execute(cursor, {"uid": study_instance_uid, "delta": grown})
    for destination in destinations:
        key = f"{destination}|{study_instance_uid}|{study_label_id}|{action}"
        queue.enqueue(
            connection,
            FORWARD,
            key,
            {
                "destination": str(destination),
                "study_instance_uid": study_instance_uid,
                "study_label_id": study_label_id,
                "withdrawn": withdrawn,
            },
        )
        forward_keys.append(key)
    sql.insert_writeback.execute(
        cursor,
        {
            "study_instance_uid": study_instance_uid,
            "study_label_id": study_label_id,
            "action": action,
            "state": "done",
            "instances_tagged": files.tagged,
            "instances_unchanged": files.unchanged,
            "sr_sop_instance_uid": sr_written.sop_instance_uid if sr_written else None,
            "sr_series_instance_uid": sr_written.series_instance_uid if sr_written else None,
            "replaced_sr_sop_instance_uid": sr_written.replaced if sr_written else None,
            "forwarded_to": [str(destination) for destination in destinations],
            "started_at": files.started_at,
            "finished_at": dt.datetime.now(dt.timezone.utc),
        },
    )
    event = trail.AuditEvent(
        f"writeback.{action}",
        trail.SUCCESS,
        actor=actor,
        identifiers={
            "study_instance_uid": study_instance_uid,
            "study_label_id": study_label_id,
            "accession_number": record.accession_number,
            "sr_sop_instance_uid": sr_written.sop_instance_uid if sr_written else None,
        },
        duration_ms=(time.perf_counter() - files.started) * 1000,
        detail=f"{files.tagged} instance(s) tagged, {files.unchanged} unchanged"
        + (f"; SR replaces {sr_written.replaced}" if sr_written and sr_written.replaced else "")
        + (f"; forward to {', '.join(map(str, destinations))}" if destinations else ""),
    )
    sql.audit.record_many(cursor, [event])
    return forward_keys


def label_record(row: Any) -> LabelRecord:
    """A study_labels row as a LabelRecord."""
    return LabelRecord(
        study_instance_uid=row.study_instance_uid,
        accession_number=row.accession_number,
        labels=dict(row.labels),
        probabilities={key: float(value) for key, value in dict(row.probabilities).items()},
        model=row.model,
        labelled_at=as_utc(row.labelled_at),
        report_id=row.report_id,
    )


def _stale_reason(connection: Connection, row: Any, withdrawn: bool) -> str:
    """Why the row is no longer what the study should carry; "" when it still is."""
    if not withdrawn:
        return "" if row.current else f"labels row {row.id} is no longer current ({row.superseded_reason})"
    if row.current:
        return f"labels row {row.id} is current, not withdrawn"
    newer = connection.execute(
        sa.select(study_labels.c.id).where(
            study_labels.c.study_instance_uid == row.study_instance_uid, study_labels.c.current.is_(True)
        )
    ).first()
    return f"labels row {newer.id} is current now" if newer is not None else ""


def _tag_instances(
    storage: Path,
    stored: Sequence[Any],
    record: LabelRecord,
    withdrawn_at: dt.datetime | None,
    *,
    write: bool,
) -> tuple[int, int, dict[int, int], list[Dataset]]:
    """Rewrite each file that does not carry the labels yet; returns (tagged, unchanged, new sizes, evidence)."""
    tagged = unchanged = 0
    sizes: dict[int, int] = {}
    evidence: list[Dataset] = []
    renamed_in: set[Path] = set()
    for row in stored:
        path = storage / row.path
        if not write:
            evidence.append(_evidence(pydicom.dcmread(path, stop_before_pixels=True), full=not evidence))
            continue
        original = path.read_bytes()
        dataset = pydicom.dcmread(io.BytesIO(original))
        # A file without the block's group (its first write-back): the block encoded directly and inserted, the
        # bytes pydicom's apply and splice below write (tests/dicom/test_retag.py compares them).
        fresh = insert_group(original, GROUP, functools.partial(encode_new_block, record, withdrawn_at))
        if fresh is not None:
            atomic_write(path, fresh, sync_folder=False)
            sizes[row.id] = len(fresh)
            renamed_in.add(path.parent)
            tagged += 1
        elif carries_labels(dataset, record, withdrawn_at=withdrawn_at):
            unchanged += 1
        else:
            if withdrawn_at is not None:
                apply_withdrawn_tags(dataset, record, withdrawn_at)
            else:
                apply_label_tags(dataset, record)
            sizes[row.id] = retag_file(path, dataset, sync_folder=False, original=original)
            renamed_in.add(path.parent)
            tagged += 1
        evidence.append(_evidence(dataset, full=not evidence))
    # One fsync per folder (not per file) makes the renames durable before the commit records them.
    sync_directories(renamed_in)
    return tagged, unchanged, sizes, evidence


def retag_file(path: Path, dataset: Dataset, *, sync_folder: bool = True, original: bytes | None = None) -> int:
    """Write `dataset` over `path` atomically, encoded like the original (pixel data bytes untouched).

    Given the `original` bytes `dataset` was read from (and changed only in its NEUROLABEL group), the new
    group is spliced into them (daemon/dicom/retag.py) instead of pydicom encoding every element again.
    """
    data = splice_group(original, dataset, GROUP) if original is not None else None
    if data is None:
        buffer = io.BytesIO()
        dataset.save_as(buffer)
        data = buffer.getvalue()
    atomic_write(path, data, sync_folder=sync_folder)
    return len(data)


def remove_stale_temporaries(study_folder: Path) -> int:
    """Delete the temporary files `atomic_write` left in the study's series folders when its process died
    (kill -9, power cut) between creating and renaming them; returns how many. A file whose writer is still
    running (its pid is a live process) is left alone."""
    removed = 0
    for candidate in study_folder.glob("*/.*.tmp"):
        match = _TEMPORARY_NAME.fullmatch(candidate.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        _remove_quietly(candidate)
        removed += 1
    if removed:
        log.info("removed %d temporary files left by an interrupted write-back in %s", removed, study_folder.name)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# atomic_write's temporary names: ".<file name>.<pid>.<thread id>.tmp"
_TEMPORARY_NAME = re.compile(r"\..+\.(\d+)\.\d+\.tmp")


def atomic_write(path: Path, data: bytes, *, sync_folder: bool = True) -> None:
    """Temp file in the same folder, fsync, rename over `path`, fsync the folder (unless the caller does it).

    Not the intake's `.incoming` folder: the DICOM listener empties that when it starts, which may be while a
    write-back runs.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        _remove_quietly(temporary)
        raise
    if sync_folder:
        sync_directory(path.parent)


_EVIDENCE_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")


def _evidence(dataset: Dataset, *, full: bool) -> Dataset:
    """What the SR needs of an instance: every attribute but pixel data for the first, UIDs for the rest."""
    if full:
        # Elements not decoded yet are copied as read (the SR needs a few of them; decoding all cost ~1 ms), and
        # into the new dataset's mapping at once (setting them one by one costs ~0.5 ms for a real instance).
        # Compared as ints: BaseTag's `<`, `group` and `is_private` run in Python (private: an odd group).
        return Dataset(
            {tag: dataset.get_item(tag) for tag in dataset.keys() if int(tag) < 0x7FE00000 and not tag & 0x10000}
        )
    result = Dataset()
    for keyword in _EVIDENCE_KEYWORDS:
        setattr(result, keyword, dataset[keyword].value)
    return result


# --- the SR ---------------------------------------------------------------------------




@dataclass(frozen=True)
class _PreviousSr:
    instance_id: int
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    path: str
    instance_number: int


@dataclass(frozen=True)
class _WrittenSr:
    sop_instance_uid: str
    series_instance_uid: str
    instance_number: int
    relative_path: str
    size: int
    replaced: str | None
    stale_file: Path | None


def _current_sr(sql: WritebackStatements, cursor: Any, study_instance_uid: str) -> _PreviousSr | None:
    rows = sql.current_sr.all(cursor, {"uid": study_instance_uid})
    if not rows:
        return None
    row = rows[0]
    return _PreviousSr(
        row.id, row.sop_instance_uid, row.sop_class_uid, row.series_instance_uid, row.path, row.instance_number or 1
    )


def _write_sr(
    encoder: SrEncoder,
    storage: Path,
    record: LabelRecord,
    study_label_id: int,
    evidence: Sequence[Dataset],
    previous: _PreviousSr | None,
    withdrawn_at: dt.datetime | None,
) -> _WrittenSr:
    identity = sr_identity(
        record.study_instance_uid,
        study_label_id,
        withdrawn=withdrawn_at is not None,
        evidence_uids=[str(item.SOPInstanceUID) for item in evidence],
    )
    if previous is not None:
        replacing = previous.sop_instance_uid != identity.sop_instance_uid
        number = previous.instance_number + 1 if replacing else previous.instance_number
        identity = dataclasses.replace(identity, instance_number=number)
    previous_versions: list[Dataset] = []
    replaced = None
    if previous is not None and previous.sop_instance_uid != identity.sop_instance_uid:
        item = Dataset()
        item.SOPClassUID = previous.sop_class_uid
        item.SOPInstanceUID = previous.sop_instance_uid
        item.StudyInstanceUID = record.study_instance_uid
        item.SeriesInstanceUID = previous.series_instance_uid
        previous_versions.append(item)
        replaced = previous.sop_instance_uid
    data = encoder.encode(record, evidence, identity, previous_versions=previous_versions, withdrawn_at=withdrawn_at)
    relative = str(instance_path(record.study_instance_uid, identity.series_instance_uid, identity.sop_instance_uid))
    path = storage / relative
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        sync_directory(path.parent.parent)
    atomic_write(path, data)
    stale_file = storage / previous.path if previous is not None and previous.path != relative else None
    return _WrittenSr(
        identity.sop_instance_uid,
        identity.series_instance_uid,
        identity.instance_number,
        relative,
        len(data),
        replaced,
        stale_file,
    )


def _record_sizes(sql: WritebackStatements, cursor: Any, stored: Sequence[Any], sizes: Mapping[int, int]) -> int:
    """New file sizes into `instances`, their differences into the series totals (kept as the intake does);
    returns the study's difference (the caller adds it to the study's total)."""
    series_delta: dict[int, int] = defaultdict(int)
    for row in stored:
        if row.id in sizes:
            sql.update_size.execute(cursor, {"instance_id": row.id, "size": sizes[row.id]})
            series_delta[row.series_ref] += sizes[row.id] - row.size_bytes
    for series_id, delta in series_delta.items():
        if delta:
            sql.grow_series.execute(cursor, {"series_id": series_id, "delta": delta})
    return sum(series_delta.values())


def _record_sr(
    sql: WritebackStatements, cursor: Any, study_instance_uid: str, written: _WrittenSr, grown: int = 0
) -> None:
    """One `instances` row (generated) for the study's current SR, in the neurolabel SR series (counted in the
    study's totals like any instance, with `grown` bytes of its retagged instances)."""
    study = sql.study_id.one(cursor, {"uid": study_instance_uid})
    if study is None:
        raise RuntimeError(f"study {study_instance_uid} has instances but no studies row")
    found = sql.series_id.one(cursor, {"uid": written.series_instance_uid})
    series_id = found.id if found is not None else None
    new_series = series_id is None
    if new_series:
        # Made with the counts the SR gives it (no update of them below).
        series_id = sql.insert_series.insert(
            cursor,
            {
                "series_instance_uid": written.series_instance_uid,
                "study_ref": study.id,
                "modality": "SR",
                "series_number": SR_SERIES_NUMBER,
                "series_description": SERIES_DESCRIPTION,
                "instance_count": 1,
                "total_bytes": written.size,
            },
        )
    old_rows = sql.generated_rows.all(cursor, {"uid": study_instance_uid})
    for row in old_rows:
        sql.delete_instance.execute(cursor, {"instance_id": row.id})
    sql.insert_instance.execute(
        cursor,
        {
            "sop_instance_uid": written.sop_instance_uid,
            "sop_class_uid": COMPREHENSIVE_SR_SOP_CLASS,
            "series_ref": series_id,
            "study_instance_uid": study_instance_uid,
            "instance_number": written.instance_number,
            "transfer_syntax_uid": pydicom.uid.ExplicitVRLittleEndian,
            "path": written.relative_path,
            "size_bytes": written.size,
            "received_at": dt.datetime.now(dt.timezone.utc),
            "generated": True,
        },
    )
    if not new_series:
        sql.set_sr_series.execute(cursor, {"series_id": series_id, "count": 1, "size": written.size})
    sql.change_study_counts.execute(
        cursor,
        {
            "study_id": study.id,
            "count": 1 - len(old_rows),
            "delta": grown + written.size - sum(row.size_bytes for row in old_rows),
        },
    )


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc.strerror)


# --- forwarding -----------------------------------------------------------------------


@dataclass(frozen=True)
class ForwardRequest:
    study_instance_uid: str
    study_label_id: object = None


def forward_study(
    config: Config,
    database: Database,
    study_instance_uid: str,
    destination: AeAddress,
    *,
    study_label_id: object = None,
    actor: str | None = None,
) -> ForwardResult:
    """C-STORE the study's files (instances first, then the SR) to `destination`; raise ForwardError on failure."""
    (outcome,) = forward_studies(
        config, database, destination, [ForwardRequest(study_instance_uid, study_label_id)], actor=actor
    )
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def forward_studies(
    config: Config,
    database: Database,
    destination: AeAddress,
    requests: Sequence[ForwardRequest],
    *,
    actor: str | None = None,
) -> list[ForwardResult | Exception]:
    """C-STORE the files of each requested study (its instances, then its SR) to `destination` over one
    association; per request its ForwardResult, or the ForwardError of its study. An audit event each."""
    started = time.perf_counter()
    uids = sorted({request.study_instance_uid for request in requests})
    with database.connect() as connection:
        rows = connection.execute(
            sa.select(instances.c.study_instance_uid, instances.c.sop_class_uid, instances.c.transfer_syntax_uid,
                      instances.c.path)
            .where(instances.c.study_instance_uid.in_(uids))
            .order_by(instances.c.study_instance_uid, instances.c.generated, instances.c.id)
        ).all()
    files: dict[str, list[tuple[Path, str, str]]] = defaultdict(list)
    for row in rows:
        stored = (config.storage.path / row.path, row.sop_class_uid, row.transfer_syntax_uid)
        files[row.study_instance_uid].append(stored)
    outcomes: list[SendOutcome | Exception] = [
        ForwardError(f"study {request.study_instance_uid} has no stored files") for request in requests
    ]
    sending = [index for index, request in enumerate(requests) if files.get(request.study_instance_uid)]
    if sending:
        try:
            sent = send_groups(
                [files[requests[index].study_instance_uid] for index in sending],
                destination,
                calling_ae_title=config.writeback.calling_ae_title,
                timeout_seconds=config.writeback.forward_timeout_seconds,
            )
        except Exception as exc:  # noqa: BLE001 - recorded for every study below
            sent = [exc] * len(sending)
        for index, outcome in zip(sending, sent):
            outcomes[index] = outcome
    elapsed_ms = (time.perf_counter() - started) * 1000
    results: list[ForwardResult | Exception] = []
    with database.begin() as connection:
        for request, outcome in zip(requests, outcomes):
            identifiers: Mapping[str, object] = {
                "study_instance_uid": request.study_instance_uid,
                "destination": str(destination),
                "study_label_id": request.study_label_id,
            }
            if isinstance(outcome, Exception):
                trail.record(connection, "writeback.forward", trail.FAILURE, actor=actor, identifiers=identifiers,
                             duration_ms=elapsed_ms, detail=str(outcome))
                results.append(outcome)
                continue
            trail.record(
                connection,
                "writeback.forward",
                trail.SUCCESS,
                actor=actor,
                identifiers=identifiers,
                duration_ms=elapsed_ms,
                detail=f"{outcome.sent} object(s) stored"
                + (f", {outcome.warnings} with warnings" if outcome.warnings else ""),
            )
            results.append(ForwardResult(str(destination), outcome.sent, outcome.warnings))
    for request, result in zip(requests, results):
        if isinstance(result, ForwardResult):  # failures: the runner logs the job's retry
            log.info(
                "forward study %s to %s: %d object(s) in %.0f ms (%d studies over one association)",
                request.study_instance_uid, destination, result.sent, elapsed_ms, len(requests),
            )
    return results
