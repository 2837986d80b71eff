"""Group commit of received instances: one thread, one transaction for whatever arrived meanwhile.

An association thread decodes the header, hands a `StoreRequest` to the
committer, then writes the file into the incoming folder and fsyncs it, while
the committer already writes the index rows. The committer takes every request
queued so far and, in one transaction: decides duplicates, writes index and
audit rows, waits until the files are written (not until they are fsynced),
renames them into place, then commits while their folders are fsynced in
parallel. The files' fsyncs, the folders' and the commit's own thus run at
the same time instead of one after the other; only when all are done does it
answer the waiting threads, so a success status still means that file and row
are durable. With several associations, concurrent instances share one commit.

Committing before the files are fsynced opens a window that only a power loss
(or an OS crash) can use: a row committed whose file did not reach the disk.
Its sender got no success status. The window is recorded: the transaction of a
batch with new instances writes the `dicom_unsynced` row (instances above the
largest id so far may not be durable yet); the next transaction, a moment of
idleness or the stop clears it. daemon/dicom/recovery.py checks just those rows
at the next start. A kill -9 opens no window: every byte is written before the
rename and the commit, and the page cache keeps it. A file that replaces a
stored copy (the "replace" policy, or a resend after a crash) still waits for
its fsync before it is renamed over that copy, which once got a success status.

An index row whose file is missing (a crash between a commit and the end of
its fsyncs, which the sender saw as a failure and resends) is repaired by the
resend: it is handled as a replacement, not as a duplicate.
"""

from __future__ import annotations

import enum
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from daemon.audit import trail
from daemon.audit.trail import AuditEvent
from daemon.dicom.index_store import (
    IdCache,
    IndexChanges,
    IndexCursor,
    IndexEntry,
    IndexStatements,
    Receipt,
    StoredInstance,
    find_instances,
    record_instances,
)
from daemon.dicom.storage import IncomingFile, Storage, sync_directories
from daemon.store.database import Database, DedicatedWriter
from daemon.store.driver import DriverStatement, cursor_of
from daemon.store.schema import dicom_unsynced, instances

log = logging.getLogger("neurolabel.dicom.index")

KEEP_FIRST = "keep_first"
REPLACE = "replace"
REFUSE = "refuse"
MAX_BATCH = 64
# How long the committer waits for more work before it clears the `dicom_unsynced` mark on its own.
IDLE_CLEAR_SECONDS = 0.05

AUDIT_INSTANCE = "dicom.instance"
AUDIT_STUDY = "dicom.study"


class Outcome(enum.Enum):
    STORED = "stored"
    REPLACED = "replaced"
    DUPLICATE_KEPT = "duplicate_kept"  # keep_first: the first copy stays, the sender gets success
    DUPLICATE_REFUSED = "duplicate_refused"  # refuse: the sender gets a failure status
    FAILED = "failed"


class Action(enum.Enum):
    NEW = "new"
    REPLACE = "replace"
    KEEP_EXISTING = "keep_existing"
    REFUSE = "refuse"
    SUPERSEDED = "superseded"  # replaced by a later copy in the same batch


def _done() -> Future[None]:
    """A future already settled: a file written by someone who fsynced it already."""
    future: Future[None] = Future()
    future.set_result(None)
    return future


@dataclass(frozen=True)
class StoreRequest:
    receipt: Receipt
    # Set by the association thread once the file is written, before its fsync (or with the error).
    file: Future[IncomingFile]
    actor: str
    started: float  # time.perf_counter() when the C-STORE request arrived
    # Set by the association thread once the file is fsynced (or with the error).
    synced: Future[None] = field(default_factory=_done)


@dataclass(frozen=True)
class Planned:
    request: StoreRequest
    action: Action
    replaces: StoredInstance | None = None

    @property
    def indexed(self) -> bool:
        return self.action in (Action.NEW, Action.REPLACE)


def plan_batch(
    requests: Sequence[StoreRequest],
    existing: Mapping[str, StoredInstance],
    policy: str,
    missing_files: Collection[str] = (),
) -> list[Planned]:
    """Decide each request under the duplicate policy, in arrival order, duplicates inside the batch included.

    `missing_files` names stored instances whose file is gone: a new copy replaces them whatever the policy.
    """
    plans: list[Planned] = []
    latest: dict[str, int] = {}  # SOP Instance UID -> index in plans of the copy that will be indexed
    for request in requests:
        uid = request.receipt.record.sop_instance_uid
        earlier = latest.get(uid)
        stored = existing.get(uid)
        if earlier is None and (stored is None or uid in missing_files):
            latest[uid] = len(plans)
            plans.append(Planned(request, Action.NEW if stored is None else Action.REPLACE, stored))
        elif policy == REPLACE:
            replaces = stored
            if earlier is not None:
                replaces = plans[earlier].replaces
                plans[earlier] = Planned(plans[earlier].request, Action.SUPERSEDED)
            latest[uid] = len(plans)
            plans.append(Planned(request, Action.NEW if replaces is None else Action.REPLACE, replaces))
        elif policy == REFUSE:
            plans.append(Planned(request, Action.REFUSE))
        else:
            plans.append(Planned(request, Action.KEEP_EXISTING))
    return plans


_OUTCOME = {
    Action.NEW: Outcome.STORED,
    Action.REPLACE: Outcome.REPLACED,
    Action.KEEP_EXISTING: Outcome.DUPLICATE_KEPT,
    Action.REFUSE: Outcome.DUPLICATE_REFUSED,
    Action.SUPERSEDED: Outcome.STORED,
}
_AUDIT_OUTCOME = {
    Action.NEW: trail.SUCCESS,
    Action.REPLACE: trail.SUCCESS,
    Action.KEEP_EXISTING: trail.DUPLICATE,
    Action.REFUSE: trail.REJECTED,
    Action.SUPERSEDED: trail.SUCCESS,
}
_AUDIT_DETAIL = {
    Action.REPLACE: "replaced the stored copy",
    Action.KEEP_EXISTING: "duplicate SOP Instance UID; first copy kept",
    Action.REFUSE: "duplicate SOP Instance UID refused",
    Action.SUPERSEDED: "replaced by a later copy in the same commit",
}


class _FilesFailed(Exception):
    """Some files of the batch could not be written; the batch is retried without them."""

    def __init__(self, failed: list[StoreRequest]) -> None:
        super().__init__(f"{len(failed)} files not written")
        self.failed = failed


@dataclass
class _Placement:
    """A file renamed into place during a commit attempt, and how to undo that if the commit fails."""

    incoming: IncomingFile
    target: Path
    backup: Path | None


@dataclass(frozen=True)
class _Committed:
    plans: list[Planned]
    changes: IndexChanges
    durable: bool  # False when an fsync failed after the commit


# One statement each once the row exists: the mark is the largest instance id before the batch's rows.
# (Constants as SQL literals: the mark and the clear run on the DBAPI cursor, which takes only the caller's values.)
_LARGEST_ID = sa.select(sa.func.coalesce(sa.func.max(instances.c.id), sa.literal_column("0"))).scalar_subquery()
_MARK_UNSYNCED = (dicom_unsynced.update().where(dicom_unsynced.c.id == sa.literal_column("1"))
                  .values(after_instance_id=_LARGEST_ID))
_FIRST_MARK = dicom_unsynced.insert().from_select(["id", "after_instance_id"], sa.select(sa.literal(1), _LARGEST_ID))
_CLEAR_UNSYNCED = (dicom_unsynced.update().where(dicom_unsynced.c.id == sa.literal_column("1"))
                   .values(after_instance_id=sa.null()))


@dataclass(frozen=True)
class _Statements:
    """What a commit runs, compiled once for the database's dialect and run on the DBAPI cursor of its transaction
    (daemon/store/driver.py); the first mark ever (one INSERT ... SELECT) still goes through SQLAlchemy."""

    index: IndexStatements
    audit: trail.DriverAudit
    mark_unsynced: DriverStatement
    clear_unsynced: DriverStatement

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> _Statements:
        return cls(IndexStatements.for_dialect(dialect), trail.DriverAudit.for_dialect(dialect),
                   DriverStatement.compile(_MARK_UNSYNCED, dialect), DriverStatement.compile(_CLEAR_UNSYNCED, dialect))


class IndexCommitter:
    """The one writer of the study index in this process."""

    def __init__(
        self,
        database: Database,
        storage: Storage,
        duplicate_policy: str,
        on_commit: Callable[[IndexChanges], None],
        max_batch: int = MAX_BATCH,
        idle_clear_seconds: float = IDLE_CLEAR_SECONDS,
    ) -> None:
        self._database = database
        # The committer thread's own connection (daemon/store/database.py), open while the thread runs.
        self._writer: DedicatedWriter | None = None
        self._storage = storage
        self._policy = duplicate_policy
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._idle_clear_seconds = idle_clear_seconds
        self._queue: queue.SimpleQueue[StoreRequest | AuditEvent | None] = queue.SimpleQueue()
        self._futures: dict[int, Future[Outcome]] = {}
        self._thread: threading.Thread | None = None
        self._syncer: ThreadPoolExecutor | None = None
        self._ids = IdCache()
        self._statements = _Statements.for_dialect(database.engine.dialect)
        self._accepting = False
        self._lock = threading.Lock()
        # Whether the committed `dicom_unsynced` row holds a mark, and whether an fsync failed after a commit
        # (the mark then stays for the next start to check).
        self._unsynced = False
        self._sync_failed = False

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neurolabel-dicom-fsync")
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name="neurolabel-dicom-index", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Commit what is queued, then end the thread."""
        with self._lock:
            self._accepting = False
            self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._syncer is not None:
            self._syncer.shutdown(wait=False)

    def store(self, request: StoreRequest) -> Future[Outcome]:
        future: Future[Outcome] = Future()
        with self._lock:
            if not self._accepting:
                future.set_result(Outcome.FAILED)
                return future
            self._futures[id(request)] = future
            self._queue.put(request)
        return future

    def audit(self, note: AuditEvent) -> None:
        with self._lock:
            if self._accepting:
                self._queue.put(note)

    def _run(self) -> None:
        self._writer = self._database.dedicated_writer()
        try:
            self._serve()
        finally:
            self._writer.close()

    def _serve(self) -> None:
        finished = False
        while not finished:
            try:
                item = self._queue.get(timeout=self._idle_clear_seconds) if self._marked() else self._queue.get()
            except queue.Empty:
                self._clear_unsynced()
                continue
            batch: list[StoreRequest | AuditEvent] = []
            if item is None:
                finished = True
            else:
                batch.append(item)
            while len(batch) < self._max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    finished = True
                    continue
                batch.append(more)
            if batch:
                self._commit_batch(batch)
        self._clear_unsynced()

    def _marked(self) -> bool:
        return self._unsynced and not self._sync_failed

    def _clear_unsynced(self) -> None:
        """Clear the `dicom_unsynced` mark once the fsyncs it covers are done (idle, or at the stop)."""
        if not self._marked():
            return
        assert self._writer is not None
        try:
            with self._writer.begin() as connection:
                cursor = cursor_of(connection)
                self._statements.clear_unsynced.execute(cursor, {})
                cursor.close()
        except Exception:
            log.exception("could not clear the unsynced mark (the next start checks those instances' files)")
            return
        self._unsynced = False

    def _commit_batch(self, batch: Sequence[StoreRequest | AuditEvent]) -> None:
        requests = [item for item in batch if isinstance(item, StoreRequest)]
        notes = [item for item in batch if isinstance(item, AuditEvent)]
        try:
            committed = self._attempt(requests, notes)
        except _FilesFailed as exc:
            for request in exc.failed:
                self._resolve(request, Outcome.FAILED)
            failed = {id(request) for request in exc.failed}
            rest = [request for request in requests if id(request) not in failed]
            if rest or notes:
                self._commit_batch([*rest, *notes])
            return
        except Exception as exc:
            if len(requests) > 1:
                log.warning("group commit of %d instances failed (%s); committing them one by one",
                            len(requests), type(exc).__name__)
                for index, request in enumerate(requests):
                    self._commit_batch([request, *(notes if index == 0 else [])])
                return
            log.exception("index commit failed")
            for request in requests:
                self._discard(request)
                self._resolve(request, Outcome.FAILED)
            return
        self._finish(committed)
        if committed.changes.last_received:
            try:
                self._on_commit(committed.changes)
            except Exception:
                log.exception("post-commit notification failed")

    def _attempt(self, requests: list[StoreRequest], notes: list[AuditEvent]) -> _Committed:
        placements: list[_Placement] = []
        unsynced: list[tuple[StoreRequest, Path]] = []
        folders: set[Path] = set()
        synced: Future[None] | None = None
        assert self._writer is not None
        try:
            with self._writer.begin() as connection:
                sql = IndexCursor.of(connection, self._statements.index)
                existing = find_instances(sql, (r.receipt.record.sop_instance_uid for r in requests))
                missing = {uid for uid, row in existing.items() if not self._storage.absolute(row.path).exists()}
                plans = plan_batch(requests, existing, self._policy, missing)
                marked = self._mark_unsynced(connection, sql.cursor, plans)
                changes = record_instances(
                    sql,
                    [IndexEntry(plan.request.receipt, plan.replaces) for plan in plans if plan.indexed],
                    self._ids,
                )
                now = time.perf_counter()
                self._statements.audit.record_many(sql.cursor, [
                    *(_audit_event(plan, now) for plan in plans),
                    *notes,
                    *(AuditEvent(AUDIT_STUDY, trail.SUCCESS, identifiers={"study_instance_uid": uid},
                                 detail="reopened: instances arrived after the study was stable")
                      for uid in changes.reopened),
                ])
                files = _wait_for_files([plan for plan in plans if plan.indexed])
                for plan in plans:
                    if plan.indexed:
                        placement = self._place(plan, files[id(plan.request)], folders)
                        placements.append(placement)
                        if plan.replaces is None:
                            unsynced.append((plan.request, placement.target))
                assert self._syncer is not None
                synced = self._syncer.submit(sync_directories, folders)
                sql.cursor.close()
                # Leaving the block commits (the WAL fsync) while the folders and the files are fsynced.
        except BaseException:
            self._ids.clear()  # the ids it learnt in this transaction were rolled back
            if synced is not None:
                synced.exception()
            for placement in reversed(placements):
                _undo(placement)
            raise
        self._unsynced = marked
        durable = True
        try:
            synced.result()
        except OSError:
            log.exception("folder fsync failed after the index commit; answering failure so the sender resends")
            durable = False
        for request, target in unsynced:
            try:
                request.synced.result()
            except Exception:
                # Its row is committed, its data may not be on disk: remove the file, so that the resend
                # replaces the row (an index row whose file is missing is repaired by the resend).
                log.error("file fsync failed after the index commit; answering failure so the sender resends")
                target.unlink(missing_ok=True)
                durable = False
        if not durable:
            self._sync_failed = True
        for placement in placements:
            if placement.backup is not None:
                placement.backup.unlink(missing_ok=True)
        return _Committed(plans, changes, durable)

    def _mark_unsynced(self, connection: sa.Connection, cursor: Any, plans: Sequence[Planned]) -> bool:
        """Record, in the batch's transaction, that its new instances (ids above the largest so far) may be
        indexed before their files are durable; or clear the mark of the previous batch, whose fsyncs are done.
        Returns whether the transaction leaves a mark."""
        if self._sync_failed and self._unsynced:
            return True  # an fsync failed: keep the mark (and the rows above it) for the next start to check
        if any(plan.action is Action.NEW for plan in plans):
            if self._statements.mark_unsynced.execute(cursor, {}).rowcount == 0:
                connection.execute(_FIRST_MARK)
            return True
        if self._unsynced:
            self._statements.clear_unsynced.execute(cursor, {})
        return False

    def _place(self, plan: Planned, incoming: IncomingFile, folders: set[Path]) -> _Placement:
        receipt = plan.request.receipt
        target = self._storage.absolute(receipt.path)
        backup: Path | None = None
        if plan.replaces is not None:
            # The copy it replaces once got a success status: never rename a file that is not yet durable
            # over it.
            plan.request.synced.result()
            # Keep the file we are about to overwrite until the commit succeeds.
            backup = incoming.path.with_suffix(".previous")
            try:
                os.link(target, backup)
            except FileNotFoundError:
                backup = None
        folders.update(self._storage.place(incoming, receipt.path))
        return _Placement(incoming, target, backup)

    def _finish(self, committed: _Committed) -> None:
        for plan in committed.plans:
            request = plan.request
            if not plan.indexed:
                self._discard(request)
            old = plan.replaces
            if plan.action == Action.REPLACE and old is not None and old.path != request.receipt.path.as_posix():
                self._storage.remove(PurePosixPath(old.path))
            outcome = _OUTCOME[plan.action] if committed.durable or not plan.indexed else Outcome.FAILED
            self._resolve(request, outcome)

    def _discard(self, request: StoreRequest) -> None:
        """Delete a request's incoming file once it is written (it may still be being written)."""
        try:
            incoming = request.file.result()
        except Exception:
            return  # never written
        self._storage.discard(incoming)

    def _resolve(self, request: StoreRequest, outcome: Outcome) -> None:
        with self._lock:
            future = self._futures.pop(id(request), None)
        if future is not None and not future.done():
            future.set_result(outcome)


def _wait_for_files(plans: Sequence[Planned]) -> dict[int, IncomingFile]:
    """The written files of `plans`, by id of their request; _FilesFailed names the requests whose write failed."""
    files: dict[int, IncomingFile] = {}
    failed: list[StoreRequest] = []
    for plan in plans:
        try:
            files[id(plan.request)] = plan.request.file.result()
        except Exception:
            failed.append(plan.request)
    if failed:
        raise _FilesFailed(failed)
    return files


def _audit_event(plan: Planned, now: float) -> AuditEvent:
    record = plan.request.receipt.record
    return AuditEvent(
        AUDIT_INSTANCE,
        _AUDIT_OUTCOME[plan.action],
        actor=plan.request.actor,
        identifiers={
            "sop_instance_uid": record.sop_instance_uid,
            "series_instance_uid": record.series.series_instance_uid,
            "study_instance_uid": record.study.study_instance_uid,
            "accession_number": record.study.accession_number,
        },
        duration_ms=round((now - plan.request.started) * 1000, 3),
        detail=_AUDIT_DETAIL.get(plan.action),
    )


def _undo(placement: _Placement) -> None:
    """Put a placed file back where it came from, and restore what it overwrote."""
    try:
        os.replace(placement.target, placement.incoming.path)
        if placement.backup is not None:
            os.replace(placement.backup, placement.target)
    except OSError:
        log.exception("could not undo the placement of %s", placement.target.name)
