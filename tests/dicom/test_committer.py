"""Group commit: duplicates by policy, index rows and counters, files placed only with their rows, on both backends."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from daemon.audit.trail import AuditEvent
from daemon.dicom.committer import (
    KEEP_FIRST,
    REFUSE,
    REPLACE,
    Action,
    IndexCommitter,
    Outcome,
    StoreRequest,
    plan_batch,
)
from daemon.dicom.index import index_record, read_header
from daemon.dicom.index_store import IndexChanges, Receipt, StoredInstance
from daemon.dicom.storage import IncomingFile, Storage
from daemon.dicom.uids import instance_path
from daemon.store.database import Database
from daemon.store.schema import audit_events, instances, patients, series, studies
from tests.dicom.datasets import encode, mr_dataset, new_uid


def receipt_of(dataset: Dataset, size: int = 100) -> Receipt:
    record = index_record(read_header(encode(dataset), ExplicitVRLittleEndian), sop_class_uid=MRImageStorage,
                          sop_instance_uid=dataset.SOPInstanceUID, transfer_syntax_uid=ExplicitVRLittleEndian)
    return Receipt(record, instance_path(record.study.study_instance_uid, record.series.series_instance_uid,
                                         record.sop_instance_uid),
                   size, dt.datetime.now(dt.timezone.utc), "MODALITY", "127.0.0.1")


def written(storage: Storage | None, content: bytes = b"x" * 100) -> Future[IncomingFile]:
    future: Future[IncomingFile] = Future()
    if storage is None:
        future.set_result(IncomingFile(Path("/nonexistent"), len(content)))
    else:
        future.set_result(storage.write_incoming([content]))
    return future


def request(dataset: Dataset, storage: Storage | None = None, content: bytes = b"x" * 100) -> StoreRequest:
    return StoreRequest(receipt_of(dataset, len(content)), written(storage, content), "MODALITY@127.0.0.1", 0.0)


# --- plan_batch (pure) -----------------------------------------------------------

def stored(dataset: Dataset) -> StoredInstance:
    return StoredInstance(1, dataset.SOPInstanceUID, "a/b/c.dcm", 10, 1, dataset.StudyInstanceUID)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (KEEP_FIRST, [Action.KEEP_EXISTING, Action.NEW, Action.KEEP_EXISTING]),
        (REFUSE, [Action.REFUSE, Action.NEW, Action.REFUSE]),
        (REPLACE, [Action.REPLACE, Action.SUPERSEDED, Action.NEW]),
    ],
)
def test_plan_batch(policy: str, expected: list[Action]) -> None:
    old, new = mr_dataset(), mr_dataset()
    requests = [request(old), request(new), request(new)]  # `new` twice in one batch
    plans = plan_batch(requests, {old.SOPInstanceUID: stored(old)}, policy)
    assert [plan.action for plan in plans] == expected
    if policy == REPLACE:
        assert plans[0].replaces == stored(old)
        assert plans[2].replaces is None


def test_a_stored_instance_whose_file_is_gone_is_replaced_whatever_the_policy() -> None:
    old = mr_dataset()
    for policy in (KEEP_FIRST, REFUSE, REPLACE):
        plans = plan_batch([request(old)], {old.SOPInstanceUID: stored(old)}, policy, {old.SOPInstanceUID})
        assert [(plan.action, plan.replaces) for plan in plans] == [(Action.REPLACE, stored(old))]


# --- the committer on a real database ---------------------------------------------

@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    result = Storage(tmp_path / "dicom", min_free_bytes=0)
    result.prepare()
    return result


class Commits:
    def __init__(self) -> None:
        self.changes: list[IndexChanges] = []

    def __call__(self, changes: IndexChanges) -> None:
        self.changes.append(changes)


@pytest.fixture
def commits() -> Commits:
    return Commits()


def committer_for(database: Database, storage: Storage, policy: str, commits: Commits) -> Iterator[IndexCommitter]:
    committer = IndexCommitter(database, storage, policy, on_commit=commits)
    committer.start()
    yield committer
    committer.stop(10)


@pytest.fixture
def keep_first(database: Database, storage: Storage, commits: Commits) -> Iterator[IndexCommitter]:
    yield from committer_for(database, storage, KEEP_FIRST, commits)


def store(committer: IndexCommitter, *requests: StoreRequest) -> list[Outcome]:
    futures = [committer.store(item) for item in requests]
    return [future.result(10) for future in futures]


def rows(database: Database, table: sa.Table) -> list[sa.Row]:
    with database.connect() as connection:
        return connection.execute(sa.select(table).order_by(table.c.id)).all()


def test_new_instances_get_files_and_rows(database: Database, storage: Storage, keep_first: IndexCommitter,
                                          commits: Commits) -> None:
    study, series_uid = new_uid(), new_uid()
    first = mr_dataset(study, series_uid, instance_number=1)
    second = mr_dataset(study, series_uid, instance_number=2, modality="MR")
    other_series = mr_dataset(study, new_uid(), modality="SR")
    assert store(keep_first, request(first, storage, b"a" * 10), request(second, storage, b"b" * 20),
                 request(other_series, storage, b"c" * 30)) == [Outcome.STORED] * 3
    [study_row] = rows(database, studies)
    assert study_row.study_instance_uid == study
    assert (study_row.instance_count, study_row.total_bytes) == (3, 60)
    assert study_row.modalities == "MR\\SR"
    assert study_row.accession_number == "ACC123" and study_row.patient_id == "PAT1"
    assert study_row.state == "receiving" and study_row.calling_ae_title == "MODALITY"
    counts = sorted((row.instance_count, row.total_bytes) for row in rows(database, series))
    assert counts == [(1, 30), (2, 30)]
    [patient] = rows(database, patients)
    assert (patient.patient_id, patient.patient_name, patient.sex) == ("PAT1", "Test^Patient", "F")
    instance_rows = rows(database, instances)
    assert len(instance_rows) == 3
    for row in instance_rows:
        assert storage.absolute(row.path).exists()
        assert row.study_instance_uid == study and row.transfer_syntax_uid == ExplicitVRLittleEndian
    assert storage.absolute(instance_rows[0].path).read_bytes() == b"a" * 10
    assert list(storage.incoming.iterdir()) == []
    assert [set(change.last_received) for change in commits.changes][-1] == {study}
    audit = rows(database, audit_events)
    assert [row.kind for row in audit] == ["dicom.instance"] * 3
    assert audit[0].identifiers["sop_instance_uid"] == first.SOPInstanceUID
    assert "PAT1" not in str([row.identifiers for row in audit]) and "Test^Patient" not in str(audit)


def test_keep_first_keeps_the_first_copy(database: Database, storage: Storage, keep_first: IndexCommitter) -> None:
    dataset = mr_dataset()
    assert store(keep_first, request(dataset, storage, b"first")) == [Outcome.STORED]
    assert store(keep_first, request(dataset, storage, b"second")) == [Outcome.DUPLICATE_KEPT]
    [row] = rows(database, instances)
    assert storage.absolute(row.path).read_bytes() == b"first"
    assert rows(database, studies)[0].instance_count == 1
    assert list(storage.incoming.iterdir()) == []
    assert [row.outcome for row in rows(database, audit_events)] == ["success", "duplicate"]


def test_refuse_refuses_the_second_copy(database: Database, storage: Storage, commits: Commits) -> None:
    for committer in committer_for(database, storage, REFUSE, commits):
        dataset = mr_dataset()
        assert store(committer, request(dataset, storage, b"first"), request(dataset, storage, b"second")) == [
            Outcome.STORED, Outcome.DUPLICATE_REFUSED]
    [row] = rows(database, instances)
    assert storage.absolute(row.path).read_bytes() == b"first"


def test_replace_moves_the_instance_and_its_counts(database: Database, storage: Storage, commits: Commits) -> None:
    for committer in committer_for(database, storage, REPLACE, commits):
        dataset = mr_dataset()
        assert store(committer, request(dataset, storage, b"old-content")) == [Outcome.STORED]
        old_path = storage.absolute(rows(database, instances)[0].path)
        moved = mr_dataset(sop=dataset.SOPInstanceUID)  # same instance, now in another study and series
        assert store(committer, request(moved, storage, b"new")) == [Outcome.REPLACED]
    [row] = rows(database, instances)
    assert row.study_instance_uid == moved.StudyInstanceUID
    assert storage.absolute(row.path).read_bytes() == b"new"
    assert not old_path.exists()
    by_uid = {study.study_instance_uid: study for study in rows(database, studies)}
    assert (by_uid[dataset.StudyInstanceUID].instance_count, by_uid[dataset.StudyInstanceUID].total_bytes) == (0, 0)
    assert (by_uid[moved.StudyInstanceUID].instance_count, by_uid[moved.StudyInstanceUID].total_bytes) == (1, 3)
    assert sorted((s.instance_count, s.total_bytes) for s in rows(database, series)) == [(0, 0), (1, 3)]


def test_a_resend_repairs_an_index_row_whose_file_is_missing(
    database: Database, storage: Storage, keep_first: IndexCommitter
) -> None:
    dataset = mr_dataset()
    store(keep_first, request(dataset, storage, b"lost"))
    path = storage.absolute(rows(database, instances)[0].path)
    path.unlink()
    assert store(keep_first, request(dataset, storage, b"again")) == [Outcome.REPLACED]
    assert path.read_bytes() == b"again"
    assert rows(database, studies)[0].instance_count == 1


def test_a_failed_write_fails_only_its_own_request(database: Database, storage: Storage,
                                                   keep_first: IndexCommitter) -> None:
    good, bad = mr_dataset(), mr_dataset()
    failing: Future[IncomingFile] = Future()
    failing.set_exception(OSError(28, "No space left on device"))
    broken = StoreRequest(receipt_of(bad), failing, "MODALITY@127.0.0.1", 0.0)
    assert store(keep_first, request(good, storage), broken) == [Outcome.STORED, Outcome.FAILED]
    assert [row.sop_instance_uid for row in rows(database, instances)] == [good.SOPInstanceUID]


def test_a_failed_commit_leaves_no_file_in_place(database: Database, storage: Storage, commits: Commits) -> None:
    dataset = mr_dataset()
    broken = IndexCommitter(_FailingDatabase(database), storage, KEEP_FIRST, on_commit=commits)  # type: ignore[arg-type]
    broken.start()
    try:
        item = request(dataset, storage)
        assert store(broken, item) == [Outcome.FAILED]
    finally:
        broken.stop(10)
    assert rows(database, instances) == []
    assert not storage.absolute(item.receipt.path).exists()
    assert list(storage.incoming.iterdir()) == []


class _FailingDatabase:
    """Fault injection: a real database whose commits fail after the statements ran (say, the WAL's disk failed)."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self.engine = database.engine

    def dedicated_writer(self) -> _FailingDatabase:
        return self

    def close(self) -> None:
        pass

    @contextlib.contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        with self._database.engine.connect() as connection:
            transaction = connection.begin()
            yield connection
            transaction.rollback()
            raise sa.exc.OperationalError("COMMIT", {}, Exception("disk I/O error"))


def test_audit_events_ride_along_and_concurrent_requests_share_commits(
    database: Database, storage: Storage, keep_first: IndexCommitter, commits: Commits
) -> None:
    keep_first.audit(AuditEvent("dicom.association", "success", actor="MODALITY@127.0.0.1", detail="accepted"))
    study = new_uid()
    datasets = [mr_dataset(study, instance_number=number) for number in range(40)]
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def send(items: list[Dataset]) -> None:
        for item in items:
            outcome = keep_first.store(request(item, storage)).result(10)
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=send, args=(datasets[index::4],)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes == [Outcome.STORED] * 40
    assert rows(database, studies)[0].instance_count == 40
    kinds = [row.kind for row in rows(database, audit_events)]
    assert kinds.count("dicom.instance") == 40 and kinds[0] == "dicom.association"
