"""Retention: the scheduled clean-up jobs of `[retention]`, each run audited.

- raw HL7 messages older than `hl7_raw_days`: accepted and duplicate messages keep their row (and their
  parsed reports) with the raw bytes emptied; rejected messages, kept only for review and reprocessing,
  are deleted;
- received DICOM files, when `delete_forwarded_files` is on: a study whose current labels were forwarded
  to every `[writeback] forward_to` destination, with nothing received since and nothing queued for it,
  loses its files and their index rows `forwarded_files_after_hours` after the last forward. The study
  row and its labels stay (the sidecar index and `neurolabel export` are unchanged); instances that
  arrive later are stored, labelled and forwarded as usual. A correction that arrives after the files
  are gone updates the sidecar labels, but its write-back has no files to tag;
- audit rows older than `audit_days`, and only those already copied to the audit file.

Work is done in chunks of short transactions so that intake is never held up behind a long one. Each job
writes one "retention.*" audit row per run with its counts (also when there was nothing to do), and the
file job one "retention.files" row per study whose files it removed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from daemon.audit import trail
from daemon.audit.file_sink import AuditFile
from daemon.config import Config, parse_ae_address
from daemon.store.database import Database
from daemon.store.schema import audit_events, hl7_messages, instances, jobs, series, studies, study_labels

if TYPE_CHECKING:
    from daemon.ops.metrics import StageMetrics

log = logging.getLogger("neurolabel.retention")

CHUNK = 500
AUDIT_HL7 = "retention.hl7_raw"
AUDIT_FILES = "retention.files"
AUDIT_AUDIT = "retention.audit"
ACTOR = "retention"
# Job kinds and states (daemon/work/writeback.py, daemon/store/queue.py).
FORWARD = "forward"
WRITEBACK = "writeback"
ACTIVE_STATES = ("pending", "running")
DONE = "done"
STABLE = "stable"


@dataclass(frozen=True)
class RetentionSummary:
    hl7_emptied: int = 0
    hl7_deleted: int = 0
    studies_cleared: int = 0
    files_deleted: int = 0
    bytes_freed: int = 0
    audit_deleted: int = 0
    errors: tuple[str, ...] = field(default=())


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def run_retention(
    config: Config, database: Database, metrics: StageMetrics | None = None, now: dt.datetime | None = None
) -> RetentionSummary:
    """Every enabled clean-up job once; a job that fails is logged and audited, the others still run."""
    now = now or utcnow()
    settings = config.retention
    hl7 = files = audit = (0, 0, 0)
    errors: list[str] = []
    if settings.hl7_raw_days > 0:
        hl7 = _guarded(errors, AUDIT_HL7, database, lambda: purge_hl7_raw(database, settings.hl7_raw_days, now))
    if settings.delete_forwarded_files:
        files = _guarded(errors, AUDIT_FILES, database, lambda: purge_forwarded_files(config, database, now))
    if settings.audit_days > 0:
        watermark = AuditFile(config.audit.log_file).watermark
        audit = _guarded(errors, AUDIT_AUDIT, database,
                         lambda: (purge_audit(database, settings.audit_days, watermark, now), 0, 0))
    summary = RetentionSummary(hl7[0], hl7[1], files[0], files[1], files[2], audit[0], tuple(errors))
    if metrics is not None:
        for what, count in (("hl7_raw", summary.hl7_emptied), ("hl7_rejected", summary.hl7_deleted),
                            ("files", summary.files_deleted), ("audit_rows", summary.audit_deleted)):
            if count:
                metrics.retention_removed.labels(what).inc(count)
    return summary


def _guarded(errors: list[str], kind: str, database: Database, job: object) -> tuple[int, int, int]:
    try:
        return job()  # type: ignore[operator, no-any-return]
    except Exception as exc:
        error = f"{type(exc).__name__}"
        log.exception("retention job %s failed", kind)
        errors.append(f"{kind}: {error}")
        try:
            with database.begin() as connection:
                trail.record(connection, kind, trail.FAILURE, actor=ACTOR, detail=error)
        except Exception:
            log.exception("retention failure of %s could not be audited", kind)
        return (0, 0, 0)


# --- HL7 raw messages --------------------------------------------------------------------


def purge_hl7_raw(database: Database, days: int, now: dt.datetime) -> tuple[int, int, int]:
    """Empty the raw bytes of accepted/duplicate messages and delete rejected ones, older than `days`.

    Returns (emptied, deleted, 0).
    """
    cutoff = now - dt.timedelta(days=days)
    older = hl7_messages.c.received_at < cutoff
    emptied = _in_chunks(
        database,
        sa.select(hl7_messages.c.id).where(
            older, hl7_messages.c.status != "rejected", sa.func.length(hl7_messages.c.raw) > 0
        ),
        lambda connection, ids: connection.execute(
            hl7_messages.update().where(hl7_messages.c.id.in_(ids)).values(raw=b"")
        ),
    )
    deleted = _in_chunks(
        database,
        sa.select(hl7_messages.c.id).where(older, hl7_messages.c.status == "rejected"),
        lambda connection, ids: connection.execute(hl7_messages.delete().where(hl7_messages.c.id.in_(ids))),
    )
    with database.begin() as connection:
        trail.record(connection, AUDIT_HL7, trail.SUCCESS, actor=ACTOR,
                     identifiers={"raw_emptied": emptied, "rejected_deleted": deleted, "older_than_days": days},
                     detail=f"messages received before {cutoff.isoformat(timespec='seconds')}")
    log.info("retention: raw HL7 of %d message(s) emptied, %d rejected message(s) deleted", emptied, deleted)
    return emptied, deleted, 0


# --- audit rows ----------------------------------------------------------------------------


def purge_audit(database: Database, days: int, watermark: int, now: dt.datetime) -> int:
    """Delete audit rows older than `days` that the audit file already holds (id <= watermark)."""
    cutoff = now - dt.timedelta(days=days)
    deleted = _in_chunks(
        database,
        sa.select(audit_events.c.id).where(audit_events.c.at < cutoff, audit_events.c.id <= watermark),
        lambda connection, ids: connection.execute(audit_events.delete().where(audit_events.c.id.in_(ids))),
    )
    with database.begin() as connection:
        trail.record(connection, AUDIT_AUDIT, trail.SUCCESS, actor=ACTOR,
                     identifiers={"deleted": deleted, "older_than_days": days, "file_watermark": watermark},
                     detail=f"audit rows before {cutoff.isoformat(timespec='seconds')}")
    log.info("retention: %d audit row(s) deleted", deleted)
    return deleted


def _in_chunks(database: Database, select_ids: sa.Select[tuple[int]], act: object) -> int:
    """Run `act(connection, ids)` on the selected ids, CHUNK at a time, each chunk in its own transaction."""
    done = 0
    after = 0
    id_column = select_ids.selected_columns[0]
    while True:
        with database.begin() as connection:
            ids = list(
                connection.execute(select_ids.where(id_column > after).order_by(id_column).limit(CHUNK)).scalars()
            )
            if ids:
                act(connection, ids)  # type: ignore[operator]
        done += len(ids)
        if len(ids) < CHUNK:
            return done
        after = ids[-1]


# --- received files after forwarding -------------------------------------------------------


@dataclass(frozen=True)
class _Cleared:
    study_instance_uid: str
    paths: tuple[str, ...]
    size: int


def purge_forwarded_files(config: Config, database: Database, now: dt.datetime) -> tuple[int, int, int]:
    """Remove the files of studies forwarded everywhere; returns (studies, files, bytes)."""
    destinations = [str(parse_ae_address("writeback.forward_to", d)) for d in config.writeback.forward_to]
    cleared: list[_Cleared] = []
    if destinations:
        cutoff = now - dt.timedelta(hours=config.retention.forwarded_files_after_hours)
        for uid, label_id in _candidates(database):
            done = _clear_study(database, uid, label_id, destinations, cutoff)
            if done is not None:
                cleared.append(done)
    files = freed = 0
    for study in cleared:
        removed, size = _unlink(config.storage.path, study.paths)
        files += removed
        freed += size
    with database.begin() as connection:
        trail.record(connection, AUDIT_FILES, trail.SUCCESS, actor=ACTOR,
                     identifiers={"studies": len(cleared), "files": files, "bytes": freed},
                     detail="run" if destinations else "no [writeback] forward_to destinations: nothing to do")
    log.info("retention: files of %d forwarded stud(ies) removed: %d file(s), %d bytes", len(cleared), files, freed)
    return len(cleared), files, freed


def _candidates(database: Database) -> list[tuple[str, int]]:
    """(study uid, current labels id) of stable studies that still have received files."""
    has_files = sa.select(instances.c.id).where(instances.c.study_instance_uid == studies.c.study_instance_uid).exists()
    with database.connect() as connection:
        rows = connection.execute(
            sa.select(studies.c.study_instance_uid, sa.func.max(study_labels.c.id))
            .join(study_labels, study_labels.c.study_instance_uid == studies.c.study_instance_uid)
            .where(studies.c.state == STABLE, study_labels.c.current.is_(True), has_files)
            .group_by(studies.c.study_instance_uid)
            .order_by(studies.c.study_instance_uid)
        ).all()
    return [(row[0], int(row[1])) for row in rows]


def _clear_study(
    database: Database, uid: str, label_id: int, destinations: Sequence[str], cutoff: dt.datetime
) -> _Cleared | None:
    """In one transaction: check the study was forwarded everywhere and is quiet, then drop its index rows."""
    with database.begin() as connection:
        study = connection.execute(
            sa.select(studies.c.id, studies.c.state, studies.c.last_received_at)
            .where(studies.c.study_instance_uid == uid)
            .with_for_update()
        ).first()
        if study is None or study.state != STABLE:
            return None
        finished = []
        for destination in destinations:
            newest = connection.execute(
                sa.select(jobs.c.state, jobs.c.finished_at)
                .where(jobs.c.kind == FORWARD, jobs.c.key == f"{destination}|{uid}|{label_id}|labels")
                .order_by(jobs.c.id.desc())
                .limit(1)
            ).first()
            if newest is None or newest.state != DONE or newest.finished_at is None:
                return None
            finished.append(newest.finished_at)
        if max(finished) > cutoff or min(finished) < study.last_received_at:
            return None
        busy = connection.execute(
            sa.select(jobs.c.id)
            .where(
                jobs.c.state.in_(ACTIVE_STATES),
                sa.or_(
                    sa.and_(jobs.c.kind == WRITEBACK, jobs.c.key.like(f"study:{uid}:%")),
                    sa.and_(jobs.c.kind == FORWARD, jobs.c.key.like(f"%|{uid}|%")),
                ),
            )
            .limit(1)
        ).first()
        if busy is not None:
            return None
        rows = connection.execute(
            sa.select(instances.c.path, instances.c.size_bytes).where(instances.c.study_instance_uid == uid)
        ).all()
        connection.execute(instances.delete().where(instances.c.study_instance_uid == uid))
        connection.execute(
            series.update().where(series.c.study_ref == study.id).values(instance_count=0, total_bytes=0)
        )
        connection.execute(studies.update().where(studies.c.id == study.id).values(instance_count=0, total_bytes=0))
        size = sum(int(row.size_bytes) for row in rows)
        trail.record(connection, AUDIT_FILES, trail.SUCCESS, actor=ACTOR,
                     identifiers={"study_instance_uid": uid, "study_label_id": label_id, "files": len(rows),
                                  "bytes": size, "forwarded_to": list(destinations)},
                     detail="received files removed after forwarding")
    return _Cleared(uid, tuple(row.path for row in rows), size)


def _unlink(storage: Path, paths: Sequence[str]) -> tuple[int, int]:
    """Delete the files (their rows are gone already); returns (files removed, bytes)."""
    removed = freed = 0
    for relative in paths:
        path = storage / relative
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("retention: could not remove %s: %s", relative, exc.strerror)
            continue
        removed += 1
        freed += size
        _remove_empty_parents(path.parent, storage)
    return removed, freed


def _remove_empty_parents(folder: Path, root: Path) -> None:
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent
