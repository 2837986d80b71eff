"""At start: remove index rows that a power loss left without their complete file.

The committer fsyncs received files beside the index commit instead of before it
(daemon/dicom/committer.py), so after a power loss an instance's row may be
durable while its file is not: missing, or shorter than the bytes recorded (the
size a file system such as ext4, XFS or btrfs keeps on disk only covers data
that reached the disk). Its sender got no success status, since that waits for
every fsync, and sends it again. Only the rows above the `dicom_unsynced` mark
are checked - the instances of the last commit before the crash - so a start on
a big archive costs a handful of stat calls. A kill -9 leaves complete files,
which pass the check.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

import sqlalchemy as sa

from daemon.audit import trail
from daemon.audit.trail import AuditEvent
from daemon.dicom.committer import AUDIT_INSTANCE
from daemon.dicom.index_store import StoredInstance, received_after, remove_instances
from daemon.dicom.storage import Storage
from daemon.store.database import Database
from daemon.store.schema import dicom_unsynced

log = logging.getLogger("neurolabel.dicom.index")

ACTOR = "recovery"
REMOVED_DETAIL = "index row removed at start: its file was incomplete after a crash (the sender got no success)"

_MARK = sa.select(dicom_unsynced.c.after_instance_id).where(dicom_unsynced.c.id == 1)
_CLEAR = dicom_unsynced.update().where(dicom_unsynced.c.id == 1).values(after_instance_id=None)


def is_incomplete(size_on_disk: int | None, recorded_size: int) -> bool:
    """A file is incomplete when it is missing (None) or shorter than the bytes its row records."""
    return size_on_disk is None or size_on_disk < recorded_size


def recover_unsynced(database: Database, storage: Storage) -> list[StoredInstance]:
    """Check the instances of the `dicom_unsynced` mark, remove (and audit) those whose file is incomplete,
    delete what is left of their files and clear the mark. Returns the removed rows. Run before the committer."""
    with database.begin() as connection:
        after = connection.execute(_MARK).scalar()
        if after is None:
            return []
        removed = [row for row in received_after(connection, after)
                   if is_incomplete(_size(storage.absolute(row.path)), row.size_bytes)]
        remove_instances(connection, removed)
        trail.record_many(connection, [
            AuditEvent(AUDIT_INSTANCE, trail.FAILURE, actor=ACTOR,
                       identifiers={"sop_instance_uid": row.sop_instance_uid,
                                    "study_instance_uid": row.study_instance_uid},
                       detail=REMOVED_DETAIL)
            for row in removed
        ])
        connection.execute(_CLEAR)
    for row in removed:
        storage.remove(PurePosixPath(row.path))
    if removed:
        log.warning("removed %d index rows whose files were incomplete after a crash", len(removed))
    return removed


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None
