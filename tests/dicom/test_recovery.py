"""After a power loss: index rows of the last commit whose files are missing or short are removed at start.

The committer fsyncs files beside the index commit, so a power loss may keep a
row whose file did not reach the disk (its sender got no success). The state a
power loss leaves is made here directly: rows above the `dicom_unsynced` mark,
a file truncated, another deleted.
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest

from daemon.app import stop_daemon
from daemon.dicom.committer import KEEP_FIRST, IndexCommitter, Outcome
from daemon.dicom.recovery import REMOVED_DETAIL, is_incomplete, recover_unsynced
from daemon.dicom.storage import Storage
from daemon.store.database import Database, open_database
from daemon.store.schema import audit_events, dicom_unsynced, instances, series, studies
from tests.dicom.conftest import Dcmtk, dicom_config, run_tool, start_listener
from tests.dicom.datasets import mr_dataset, new_uid, save
from tests.dicom.test_committer import Commits, request, rows, store
from tests.dicom.test_scp_dcmtk import listener_of, select, storescu_args
from tests.work.conftest import wait_for


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    result = Storage(tmp_path / "dicom", min_free_bytes=0)
    result.prepare()
    return result


@pytest.fixture
def lazy(database: Database, storage: Storage) -> Iterator[IndexCommitter]:
    """A committer that never clears its mark while idle (only at the stop)."""
    committer = IndexCommitter(database, storage, KEEP_FIRST, on_commit=Commits(), idle_clear_seconds=3600)
    committer.start()
    yield committer
    committer.stop(10)


def mark(database: Database) -> list[int]:
    return [row.after_instance_id for row in rows(database, dicom_unsynced) if row.after_instance_id is not None]


def set_mark(database: Database, after: int) -> None:
    with database.begin() as connection:
        connection.execute(dicom_unsynced.update().values(after_instance_id=after))


def test_is_incomplete() -> None:
    assert is_incomplete(None, 10)
    assert is_incomplete(9, 10)
    assert not is_incomplete(10, 10)
    assert not is_incomplete(11, 10)  # e.g. retagged since: private tags added


def test_a_commit_marks_its_new_instances_until_the_next_one_or_the_stop(
    database: Database, storage: Storage, lazy: IndexCommitter
) -> None:
    assert store(lazy, request(mr_dataset(), storage)) == [Outcome.STORED]
    assert mark(database) == [0]  # every instance above id 0: the one just stored
    assert store(lazy, request(mr_dataset(), storage)) == [Outcome.STORED]
    first_id = rows(database, instances)[0].id
    assert mark(database) == [first_id]  # the first one's fsyncs are done: only the second is covered
    lazy.stop(10)
    assert mark(database) == []


def test_a_replacement_is_not_marked(database: Database, storage: Storage, lazy: IndexCommitter) -> None:
    dataset = mr_dataset()
    store(lazy, request(dataset, storage, b"lost"))
    storage.absolute(rows(database, instances)[0].path).unlink()
    assert store(lazy, request(dataset, storage, b"again")) == [Outcome.REPLACED]
    assert mark(database) == []  # fsynced before it was renamed into place, as before


def test_recovery_removes_rows_whose_files_are_missing_or_short(
    database: Database, storage: Storage, lazy: IndexCommitter
) -> None:
    study = new_uid()
    series_uid = new_uid()
    before = mr_dataset(study, series_uid, instance_number=1)
    store(lazy, request(before, storage, b"a" * 100))
    batch = [mr_dataset(study, series_uid, instance_number=n) for n in (2, 3, 4)]
    assert store(lazy, *(request(dataset, storage, b"b" * 100) for dataset in batch)) == [Outcome.STORED] * 3
    by_uid = {row.sop_instance_uid: row for row in rows(database, instances)}
    # What a power loss may leave of the last commit: one file never written, one short; and one earlier
    # file short too, which the mark does not cover (its fsyncs had returned).
    storage.absolute(by_uid[batch[0].SOPInstanceUID].path).unlink()
    storage.absolute(by_uid[batch[1].SOPInstanceUID].path).write_bytes(b"b" * 40)
    storage.absolute(by_uid[before.SOPInstanceUID].path).write_bytes(b"")
    [after] = mark(database)
    assert after == by_uid[before.SOPInstanceUID].id
    lazy.stop(10)  # a clean stop clears the mark; a power loss would have left it
    set_mark(database, after)

    removed = recover_unsynced(database, storage)

    assert sorted(row.sop_instance_uid for row in removed) == sorted(d.SOPInstanceUID for d in batch[:2])
    assert sorted(row.sop_instance_uid for row in rows(database, instances)) == sorted(
        [before.SOPInstanceUID, batch[2].SOPInstanceUID])
    assert not storage.absolute(by_uid[batch[1].SOPInstanceUID].path).exists()
    assert storage.absolute(by_uid[batch[2].SOPInstanceUID].path).read_bytes() == b"b" * 100
    [study_row] = rows(database, studies)
    [series_row] = rows(database, series)
    assert (study_row.instance_count, study_row.total_bytes) == (2, 200)
    assert (series_row.instance_count, series_row.total_bytes) == (2, 200)
    audit = [row for row in rows(database, audit_events) if row.detail == REMOVED_DETAIL]
    assert sorted(row.identifiers["sop_instance_uid"] for row in audit) == sorted(d.SOPInstanceUID for d in batch[:2])
    assert {row.outcome for row in audit} == {"failure"}
    assert mark(database) == []
    assert recover_unsynced(database, storage) == []  # cleared: a second start checks nothing


def test_recovery_without_a_mark_checks_nothing(database: Database, storage: Storage, lazy: IndexCommitter) -> None:
    store(lazy, request(mr_dataset(), storage, b"x" * 10))
    lazy.stop(10)
    storage.absolute(rows(database, instances)[0].path).unlink()  # e.g. deleted by hand: not the intake's business
    assert recover_unsynced(database, storage) == []
    assert len(rows(database, instances)) == 1


async def test_the_listener_checks_at_start_and_the_resend_restores(dcmtk: Dcmtk, tmp_path: Path) -> None:
    config = dicom_config(tmp_path)
    folder = tmp_path / "sent"
    study = new_uid()
    paths = [save(mr_dataset(study, instance_number=number, pixels=64), folder / f"{number}.dcm") for number in (1, 2)]
    daemon = await start_listener(config)
    try:
        sent = await run_tool(dcmtk, "storescu", storescu_args(listener_of(daemon).port, *paths))
        assert sent.returncode == 0, sent.output[-500:]
    finally:
        await stop_daemon(daemon, drain_seconds=5)
    database = open_database(config.database.url)
    try:
        [first, second] = rows(database, instances)
        # What a power loss during the second instance's fsyncs may leave: its row, and its file empty.
        set_mark(database, first.id)
        (config.storage.path / second.path).write_bytes(b"")
    finally:
        database.dispose()

    daemon = await start_listener(config)
    try:
        assert [row.sop_instance_uid for row in select(daemon, instances)] == [first.sop_instance_uid]
        assert select(daemon, studies)[0].instance_count == 1
        assert not (config.storage.path / second.path).exists()
        assert len(select(daemon, audit_events, audit_events.c.detail == REMOVED_DETAIL)) == 1
        resent = await run_tool(dcmtk, "storescu", storescu_args(listener_of(daemon).port, *paths))
        assert resent.returncode == 0, resent.output[-500:]
        assert len(select(daemon, instances)) == 2
        assert (config.storage.path / second.path).stat().st_size == second.size_bytes
    finally:
        await stop_daemon(daemon, drain_seconds=5)


async def test_the_commit_does_not_wait_for_the_file_fsync_but_the_answer_does(
    database: Database, storage: Storage, lazy: IndexCommitter
) -> None:
    dataset = mr_dataset()
    synced: Future[None] = Future()
    base = request(dataset, storage, b"x" * 10)
    answer = lazy.store(dataclasses.replace(base, synced=synced))
    await wait_for(lambda: rows(database, instances), timeout=10, what="the row committed")
    assert storage.absolute(rows(database, instances)[0].path).exists()
    assert not answer.done()  # committed and in place, but not answered before the file is durable
    synced.set_result(None)
    assert answer.result(10) == Outcome.STORED


async def test_a_failed_file_fsync_after_the_commit_fails_the_request_and_the_resend_repairs(
    database: Database, storage: Storage, lazy: IndexCommitter
) -> None:
    dataset = mr_dataset()
    synced: Future[None] = Future()
    synced.set_exception(OSError(errno.EIO, "I/O error"))
    base = request(dataset, storage, b"x" * 10)
    assert lazy.store(dataclasses.replace(base, synced=synced)).result(10) == Outcome.FAILED
    [row] = rows(database, instances)
    assert not storage.absolute(row.path).exists()  # removed: the resend must replace it, not keep it
    assert mark(database) == [0]  # kept for the next start while an fsync failed
    assert store(lazy, request(dataset, storage, b"y" * 10)) == [Outcome.REPLACED]
    assert storage.absolute(row.path).read_bytes() == b"y" * 10
