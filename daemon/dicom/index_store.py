"""The study index in the database: patient, study, series and instance rows, written a batch at a time.

Every function works inside the caller's transaction. Counters (instances,
bytes) change by deltas, so an instance that is replaced, even into another
series or study, moves its contribution instead of being counted twice.

This runs once per received instance, so the statements are compiled once per
dialect and run on the DBAPI cursor (`IndexStatements`, `IndexCursor`), and ids
of patients and series, which only this writer creates, are remembered in an
`IdCache`; studies are read every time because the stability check changes
their state from another thread.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy import Connection, bindparam
from sqlalchemy.engine import Dialect

from daemon.dicom.index import IndexRecord, PatientInfo, SeriesInfo, StudyInfo
from daemon.store.driver import DriverStatement, cursor_of
from daemon.store.schema import instances, patients, series, studies

RECEIVING = "receiving"
STABLE = "stable"
MODALITIES_WIDTH = 64
_MODALITY_SEPARATOR = "\\"
_CACHE_SIZE = 4096

_STUDY_ATTRIBUTES = ("accession_number", "study_date", "study_time", "study_description", "referring_physician")
_SERIES_ATTRIBUTES = ("modality", "series_number", "series_description", "body_part_examined")


@dataclass(frozen=True)
class Receipt:
    """One received instance: what it is, where its file is and how it came."""

    record: IndexRecord
    path: PurePosixPath
    size_bytes: int
    received_at: dt.datetime
    calling_ae_title: str
    peer: str


@dataclass(frozen=True)
class StoredInstance:
    """What the index already holds for a SOP Instance UID."""

    id: int
    sop_instance_uid: str
    path: str
    size_bytes: int
    series_ref: int
    study_instance_uid: str


@dataclass(frozen=True)
class IndexEntry:
    """A receipt to record; `replaces` is the row it overwrites (duplicate policy "replace")."""

    receipt: Receipt
    replaces: StoredInstance | None = None


@dataclass(frozen=True)
class IndexChanges:
    """What a batch changed: the studies that received instances (with their latest receipt time)."""

    last_received: dict[str, dt.datetime] = field(default_factory=dict)
    created: tuple[str, ...] = ()
    reopened: tuple[str, ...] = ()


K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self._size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


class IdCache:
    """Row ids (and the values last written) of recent patients and series; one per writer thread.

    `clear()` it whenever a transaction fails: the rows it names may have been rolled back.
    """

    def __init__(self, size: int = _CACHE_SIZE) -> None:
        self.patients: _Lru[tuple[str, str], tuple[int, PatientInfo]] = _Lru(size)
        self.series: _Lru[str, int] = _Lru(size)

    def clear(self) -> None:
        self.patients.clear()
        self.series.clear()


# --- statements, compiled once per dialect --------------------------------------

_STORED_COLUMNS = (
    instances.c.id,
    instances.c.sop_instance_uid,
    instances.c.path,
    instances.c.size_bytes,
    instances.c.series_ref,
    instances.c.study_instance_uid,
)
_FIND_INSTANCE = sa.select(*_STORED_COLUMNS).where(instances.c.sop_instance_uid == bindparam("uid"))
_RECEIVED_AFTER = sa.select(*_STORED_COLUMNS).where(instances.c.id > bindparam("after"),
                                                    instances.c.generated.is_(False))

_FIND_PATIENT = sa.select(
    patients.c.id, patients.c.patient_name, patients.c.birth_date, patients.c.sex
).where(patients.c.patient_id == bindparam("key_id"), patients.c.issuer_of_patient_id == bindparam("key_issuer"))
_PATIENT_KEYS = ("patient_id", "issuer_of_patient_id", "patient_name", "birth_date", "sex")
_UPDATE_PATIENT = (
    patients.update()
    .where(patients.c.id == bindparam("row_id"))
    .values(
        patient_name=sa.func.coalesce(bindparam("new_name", type_=patients.c.patient_name.type),
                                      patients.c.patient_name),
        birth_date=sa.func.coalesce(bindparam("new_birth", type_=patients.c.birth_date.type), patients.c.birth_date),
        sex=sa.func.coalesce(bindparam("new_sex", type_=patients.c.sex.type), patients.c.sex),
    )
)

def _counts_added(table: sa.Table) -> dict[str, Any]:
    """SET values that add `add_count` instances and `add_bytes` bytes (negative to take them off)."""
    return {
        "instance_count": table.c.instance_count + bindparam("add_count", type_=sa.Integer),
        "total_bytes": table.c.total_bytes + bindparam("add_bytes", type_=sa.BigInteger),
    }


_FIND_STUDY = sa.select(
    studies.c.id, studies.c.state, studies.c.modalities, studies.c.last_received_at
).where(studies.c.study_instance_uid == bindparam("uid"))
_STUDY_KEYS = ("study_instance_uid", "patient_ref", "patient_id", "modalities", "instance_count", "total_bytes",
               "first_received_at", "last_received_at", "calling_ae_title", "state", "stable_count",
               *_STUDY_ATTRIBUTES)
_UPDATE_STUDY = (
    studies.update()
    .where(studies.c.id == bindparam("row_id"))
    .values(
        **_counts_added(studies),
        last_received_at=bindparam("new_last", type_=studies.c.last_received_at.type),
        modalities=bindparam("new_modalities", type_=studies.c.modalities.type),
        state=bindparam("new_state", type_=studies.c.state.type),
        stable_at=sa.null(),
        **{
            name: sa.func.coalesce(studies.c[name], bindparam(f"new_{name}", type_=studies.c[name].type))
            for name in _STUDY_ATTRIBUTES
        },
    )
)
_MOVE_FROM_STUDY = (
    studies.update()
    .where(studies.c.study_instance_uid == bindparam("uid"))
    .values(
        **_counts_added(studies),
    )
)

_FIND_SERIES = sa.select(series.c.id).where(series.c.series_instance_uid == bindparam("uid"))
_SERIES_KEYS = ("series_instance_uid", "study_ref", "instance_count", "total_bytes", *_SERIES_ATTRIBUTES)
_UPDATE_SERIES = (
    series.update()
    .where(series.c.id == bindparam("row_id"))
    .values(
        **_counts_added(series),
        **{
            name: sa.func.coalesce(series.c[name], bindparam(f"new_{name}", type_=series.c[name].type))
            for name in _SERIES_ATTRIBUTES
        },
    )
)
_MOVE_FROM_SERIES = (
    series.update()
    .where(series.c.id == bindparam("row_id"))
    .values(
        **_counts_added(series),
    )
)

_INSTANCE_KEYS = ("sop_instance_uid", "sop_class_uid", "series_ref", "study_instance_uid", "instance_number",
                  "transfer_syntax_uid", "path", "size_bytes", "received_at", "calling_ae_title", "peer", "generated")
_UPDATE_INSTANCE = instances.update().where(instances.c.id == bindparam("row_id"))


@dataclass(frozen=True)
class IndexStatements:
    """The statements the index runs for every received instance, compiled once for the database's dialect and run
    on the DBAPI cursor of the caller's transaction (daemon/store/driver.py): SQLAlchemy's own execution of a
    cached statement cost ~0.1 ms, more than SQLite's work for it, and a one-instance commit runs about nine.
    Same SQL, same conversions of the values (timestamps to UTC), so the same rows."""

    find_instance: DriverStatement
    find_patient: DriverStatement
    insert_patient: DriverStatement
    update_patient: DriverStatement
    find_study: DriverStatement
    insert_study: DriverStatement
    update_study: DriverStatement
    move_from_study: DriverStatement
    find_series: DriverStatement
    insert_series: DriverStatement
    update_series: DriverStatement
    move_from_series: DriverStatement
    insert_instance: DriverStatement
    update_instance: DriverStatement

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> IndexStatements:
        compile_ = DriverStatement.compile
        return cls(
            find_instance=compile_(_FIND_INSTANCE, dialect),
            find_patient=compile_(_FIND_PATIENT, dialect),
            insert_patient=DriverStatement.insert_returning_id(patients, dialect, _PATIENT_KEYS),
            update_patient=compile_(_UPDATE_PATIENT, dialect),
            find_study=compile_(_FIND_STUDY, dialect),
            insert_study=DriverStatement.insert_returning_id(studies, dialect, _STUDY_KEYS),
            update_study=compile_(_UPDATE_STUDY, dialect),
            move_from_study=compile_(_MOVE_FROM_STUDY, dialect),
            find_series=compile_(_FIND_SERIES, dialect),
            insert_series=DriverStatement.insert_returning_id(series, dialect, _SERIES_KEYS),
            update_series=compile_(_UPDATE_SERIES, dialect),
            move_from_series=compile_(_MOVE_FROM_SERIES, dialect),
            insert_instance=compile_(instances.insert(), dialect, _INSTANCE_KEYS),
            update_instance=compile_(_UPDATE_INSTANCE, dialect, _INSTANCE_KEYS),
        )


@dataclass(frozen=True)
class IndexCursor:
    """The index's statements and the DBAPI cursor of one transaction (`driver.cursor_of(connection)`)."""

    statements: IndexStatements
    cursor: Any

    @classmethod
    def of(cls, connection: Connection, statements: IndexStatements | None = None) -> IndexCursor:
        return cls(statements or IndexStatements.for_dialect(connection.dialect), cursor_of(connection))


def find_instances(sql: IndexCursor, sop_instance_uids: Iterable[str]) -> dict[str, StoredInstance]:
    found: dict[str, StoredInstance] = {}
    for uid in sorted(set(sop_instance_uids)):
        row = sql.statements.find_instance.fetchone(sql.cursor, {"uid": uid})
        if row is not None:
            found[uid] = StoredInstance(*row)
    return found


def received_after(connection: Connection, instance_id: int) -> list[StoredInstance]:
    """The received (not generated) instances with an id above `instance_id`."""
    return [StoredInstance(*row) for row in connection.execute(_RECEIVED_AFTER, {"after": instance_id}).all()]


def record_instances(sql: IndexCursor, entries: Sequence[IndexEntry], cache: IdCache | None = None) -> IndexChanges:
    """Insert or update the rows for `entries` (at most one per SOP Instance UID) and their parents."""
    if not entries:
        return IndexChanges()
    cache = cache or IdCache()
    patient_refs = {
        _key(entry.receipt.record.patient): _patient_ref(sql, entry.receipt.record.patient, cache)
        for entry in entries
    }
    study_refs, created, reopened, last_received = _upsert_studies(sql, entries, patient_refs)
    series_refs = _upsert_series(sql, entries, study_refs, cache)
    _write_instances(sql, entries, series_refs)
    _move_replaced(sql, entries)
    return IndexChanges(last_received=last_received, created=tuple(created), reopened=tuple(reopened))


def _key(person: PatientInfo) -> tuple[str, str]:
    return (person.patient_id, person.issuer_of_patient_id)


def _patient_ref(sql: IndexCursor, person: PatientInfo, cache: IdCache) -> int:
    """The patient's row id; demographics the data set carries are updated when they changed."""
    key = _key(person)
    cached = cache.patients.get(key)
    if cached is not None:
        row_id, known = cached
        if known == person:
            return row_id
    else:
        row = sql.statements.find_patient.fetchone(sql.cursor, {"key_id": key[0], "key_issuer": key[1]})
        if row is None:
            row_id = sql.statements.insert_patient.insert(sql.cursor, {
                "patient_id": key[0], "issuer_of_patient_id": key[1], "patient_name": person.patient_name,
                "birth_date": person.birth_date, "sex": person.sex,
            })
            cache.patients.put(key, (row_id, person))
            return row_id
        row_id = row[0]
        if row[1:] == (person.patient_name, person.birth_date, person.sex):
            cache.patients.put(key, (row_id, person))
            return row_id
    sql.statements.update_patient.execute(sql.cursor, {"row_id": row_id, "new_name": person.patient_name,
                                                       "new_birth": person.birth_date, "new_sex": person.sex})
    cache.patients.put(key, (row_id, person))
    return row_id


def _upsert_studies(
    sql: IndexCursor, entries: Sequence[IndexEntry], patient_refs: dict[tuple[str, str], int]
) -> tuple[dict[str, int], list[str], list[str], dict[str, dt.datetime]]:
    """Create missing studies; add counts, fill empty attributes, merge modalities and reopen existing ones."""
    first: dict[str, tuple[StudyInfo, Receipt]] = {}
    modalities: dict[str, set[str]] = defaultdict(set)
    last_received: dict[str, dt.datetime] = {}
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for entry in entries:
        receipt = entry.receipt
        uid = receipt.record.study.study_instance_uid
        first.setdefault(uid, (receipt.record.study, receipt))
        if receipt.record.series.modality:
            modalities[uid].add(receipt.record.series.modality)
        last_received[uid] = max(last_received.get(uid, receipt.received_at), receipt.received_at)
        counts[uid][0] += 1
        counts[uid][1] += receipt.size_bytes
    refs: dict[str, int] = {}
    reopened: list[str] = []
    statements = sql.statements
    for uid in sorted(first):
        row = statements.find_study.fetchone(sql.cursor, {"uid": uid})
        if row is None:
            continue
        row_id, state, stored_modalities, stored_last = row
        refs[uid] = row_id
        if state != RECEIVING:
            reopened.append(uid)
        info = first[uid][0]
        last = last_received[uid] if stored_last is None else max(stored_last, last_received[uid])
        statements.update_study.execute(sql.cursor, {
            "row_id": row_id,
            "add_count": counts[uid][0],
            "add_bytes": counts[uid][1],
            "new_last": last,
            "new_modalities": _merge_modalities(stored_modalities, modalities[uid]),
            "new_state": RECEIVING,
            **{f"new_{name}": getattr(info, name) for name in _STUDY_ATTRIBUTES},
        })
    created: list[str] = []
    for uid, (info, receipt) in first.items():
        if uid in refs:
            continue
        person = receipt.record.patient
        refs[uid] = statements.insert_study.insert(sql.cursor, {
            "study_instance_uid": uid,
            "patient_ref": patient_refs.get(_key(person)),
            "patient_id": person.patient_id or None,
            "modalities": _merge_modalities(None, modalities[uid]),
            "instance_count": counts[uid][0],
            "total_bytes": counts[uid][1],
            "first_received_at": receipt.received_at,
            "last_received_at": last_received[uid],
            "calling_ae_title": receipt.calling_ae_title[:16] or None,
            "state": RECEIVING,
            "stable_count": 0,
            **{name: getattr(info, name) for name in _STUDY_ATTRIBUTES},
        })
        created.append(uid)
    return refs, created, reopened, last_received


def _upsert_series(
    sql: IndexCursor, entries: Sequence[IndexEntry], study_refs: dict[str, int], cache: IdCache
) -> dict[str, int]:
    first: dict[str, tuple[SeriesInfo, str]] = {}
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for entry in entries:
        record = entry.receipt.record
        uid = record.series.series_instance_uid
        first.setdefault(uid, (record.series, record.study.study_instance_uid))
        counts[uid][0] += 1
        counts[uid][1] += entry.receipt.size_bytes
    refs: dict[str, int] = {}
    statements = sql.statements
    for uid, (info, study_uid) in first.items():
        row_id = cache.series.get(uid)
        if row_id is None:
            row = statements.find_series.fetchone(sql.cursor, {"uid": uid})
            row_id = None if row is None else row[0]
        if row_id is None:
            row_id = statements.insert_series.insert(sql.cursor, {
                "series_instance_uid": uid,
                "study_ref": study_refs[study_uid],
                "instance_count": counts[uid][0],
                "total_bytes": counts[uid][1],
                **{name: getattr(info, name) for name in _SERIES_ATTRIBUTES},
            })
        else:
            statements.update_series.execute(sql.cursor, {
                "row_id": row_id,
                "add_count": counts[uid][0],
                "add_bytes": counts[uid][1],
                **{f"new_{name}": getattr(info, name) for name in _SERIES_ATTRIBUTES},
            })
        cache.series.put(uid, row_id)
        refs[uid] = row_id
    return refs


def _instance_values(receipt: Receipt, series_ref: int) -> dict[str, Any]:
    record = receipt.record
    return {
        "sop_instance_uid": record.sop_instance_uid,
        "sop_class_uid": record.sop_class_uid,
        "series_ref": series_ref,
        "study_instance_uid": record.study.study_instance_uid,
        "instance_number": record.instance_number,
        "transfer_syntax_uid": record.transfer_syntax_uid,
        "path": receipt.path.as_posix(),
        "size_bytes": receipt.size_bytes,
        "received_at": receipt.received_at,
        "calling_ae_title": receipt.calling_ae_title[:16] or None,
        "peer": receipt.peer[:128] or None,
        "generated": False,
    }


def _write_instances(sql: IndexCursor, entries: Sequence[IndexEntry], series_refs: dict[str, int]) -> None:
    new_rows = []
    for entry in entries:
        values = _instance_values(entry.receipt, series_refs[entry.receipt.record.series.series_instance_uid])
        if entry.replaces is None:
            new_rows.append(values)
        else:
            sql.statements.update_instance.execute(sql.cursor, {**values, "row_id": entry.replaces.id})
    sql.statements.insert_instance.executemany(sql.cursor, new_rows)


def _move_replaced(sql: IndexCursor, entries: Sequence[IndexEntry]) -> None:
    """Take replaced rows' counts and bytes off the series and study they were counted in."""
    for entry in entries:
        if entry.replaces is not None:
            _take_off_counts(sql, entry.replaces)


def _take_off_counts(sql: IndexCursor, old: StoredInstance) -> None:
    sql.statements.move_from_series.execute(sql.cursor, {"row_id": old.series_ref, "add_count": -1,
                                                         "add_bytes": -old.size_bytes})
    sql.statements.move_from_study.execute(sql.cursor, {"uid": old.study_instance_uid, "add_count": -1,
                                                        "add_bytes": -old.size_bytes})


def remove_instances(connection: Connection, rows: Sequence[StoredInstance]) -> None:
    """Delete instance rows and take their counts and bytes off their series and studies (which stay)."""
    if not rows:
        return
    connection.execute(instances.delete().where(instances.c.id.in_([row.id for row in rows])))
    sql = IndexCursor.of(connection)
    for row in rows:
        _take_off_counts(sql, row)


def _merge_modalities(current: str | None, more: Iterable[str]) -> str | None:
    values = set(filter(None, (current or "").split(_MODALITY_SEPARATOR))) | set(more)
    if not values:
        return None
    return _MODALITY_SEPARATOR.join(sorted(values))[:MODALITIES_WIDTH]
