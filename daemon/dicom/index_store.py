"""The study index in the database: patient, study, series and instance rows, written a batch at a time.

Every function works inside the caller's transaction. Counters (instances,
bytes) change by deltas, so an instance that is replaced, even into another
series or study, moves its contribution instead of being counted twice.

This runs once per received instance, so the statements are built once (with
bind parameters) and ids of patients and series, which only this writer
creates, are remembered in an `IdCache`; studies are read every time because
the stability check changes their state from another thread.
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

from daemon.dicom.index import IndexRecord, PatientInfo, SeriesInfo, StudyInfo
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


# --- statements, built once ---------------------------------------------------

_STORED_COLUMNS = (
    instances.c.id,
    instances.c.sop_instance_uid,
    instances.c.path,
    instances.c.size_bytes,
    instances.c.series_ref,
    instances.c.study_instance_uid,
)
_FIND_INSTANCES = sa.select(*_STORED_COLUMNS).where(instances.c.sop_instance_uid.in_(bindparam("uids", expanding=True)))
_RECEIVED_AFTER = sa.select(*_STORED_COLUMNS).where(instances.c.id > bindparam("after"),
                                                    instances.c.generated.is_(False))

_FIND_PATIENT = sa.select(
    patients.c.id, patients.c.patient_name, patients.c.birth_date, patients.c.sex
).where(patients.c.patient_id == bindparam("key_id"), patients.c.issuer_of_patient_id == bindparam("key_issuer"))
_UPDATE_PATIENT = (
    patients.update()
    .where(patients.c.id == bindparam("row_id"))
    .values(
        patient_name=sa.func.coalesce(bindparam("new_name", type_=patients.c.patient_name.type), patients.c.patient_name),
        birth_date=sa.func.coalesce(bindparam("new_birth", type_=patients.c.birth_date.type), patients.c.birth_date),
        sex=sa.func.coalesce(bindparam("new_sex", type_=patients.c.sex.type), patients.c.sex),
    )
)

_FIND_STUDIES = sa.select(
    studies.c.id, studies.c.study_instance_uid, studies.c.state, studies.c.modalities, studies.c.last_received_at
).where(studies.c.study_instance_uid.in_(bindparam("uids", expanding=True)))
_UPDATE_STUDY = (
    studies.update()
    .where(studies.c.id == bindparam("row_id"))
    .values(
        instance_count=studies.c.instance_count + bindparam("add_count", type_=sa.Integer),
        total_bytes=studies.c.total_bytes + bindparam("add_bytes", type_=sa.BigInteger),
        last_received_at=bindparam("new_last", type_=studies.c.last_received_at.type),
        modalities=bindparam("new_modalities", type_=studies.c.modalities.type),
        state=RECEIVING,
        stable_at=None,
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
        instance_count=studies.c.instance_count + bindparam("add_count", type_=sa.Integer),
        total_bytes=studies.c.total_bytes + bindparam("add_bytes", type_=sa.BigInteger),
    )
)

_FIND_SERIES = sa.select(series.c.id).where(series.c.series_instance_uid == bindparam("uid"))
_UPDATE_SERIES = (
    series.update()
    .where(series.c.id == bindparam("row_id"))
    .values(
        instance_count=series.c.instance_count + bindparam("add_count", type_=sa.Integer),
        total_bytes=series.c.total_bytes + bindparam("add_bytes", type_=sa.BigInteger),
        **{
            name: sa.func.coalesce(series.c[name], bindparam(f"new_{name}", type_=series.c[name].type))
            for name in _SERIES_ATTRIBUTES
        },
    )
)

_INSERT_INSTANCES = instances.insert()
_UPDATE_INSTANCE = instances.update().where(instances.c.id == bindparam("row_id"))


def find_instances(connection: Connection, sop_instance_uids: Iterable[str]) -> dict[str, StoredInstance]:
    wanted = sorted(set(sop_instance_uids))
    if not wanted:
        return {}
    rows = connection.execute(_FIND_INSTANCES, {"uids": wanted}).all()
    return {row.sop_instance_uid: _stored(row) for row in rows}


def received_after(connection: Connection, instance_id: int) -> list[StoredInstance]:
    """The received (not generated) instances with an id above `instance_id`."""
    return [_stored(row) for row in connection.execute(_RECEIVED_AFTER, {"after": instance_id}).all()]


def _stored(row: Any) -> StoredInstance:
    return StoredInstance(row.id, row.sop_instance_uid, row.path, row.size_bytes, row.series_ref,
                          row.study_instance_uid)


def record_instances(
    connection: Connection, entries: Sequence[IndexEntry], cache: IdCache | None = None
) -> IndexChanges:
    """Insert or update the rows for `entries` (at most one per SOP Instance UID) and their parents."""
    if not entries:
        return IndexChanges()
    cache = cache or IdCache()
    patient_refs = {
        _key(entry.receipt.record.patient): _patient_ref(connection, entry.receipt.record.patient, cache)
        for entry in entries
    }
    study_refs, created, reopened, last_received = _upsert_studies(connection, entries, patient_refs)
    series_refs = _upsert_series(connection, entries, study_refs, cache)
    _write_instances(connection, entries, series_refs)
    _move_replaced(connection, entries)
    return IndexChanges(last_received=last_received, created=tuple(created), reopened=tuple(reopened))


def _key(person: PatientInfo) -> tuple[str, str]:
    return (person.patient_id, person.issuer_of_patient_id)


def _patient_ref(connection: Connection, person: PatientInfo, cache: IdCache) -> int:
    """The patient's row id; demographics the data set carries are updated when they changed."""
    key = _key(person)
    cached = cache.patients.get(key)
    if cached is not None:
        row_id, known = cached
        if known == person:
            return row_id
    else:
        row = connection.execute(_FIND_PATIENT, {"key_id": key[0], "key_issuer": key[1]}).first()
        if row is None:
            result = connection.execute(
                patients.insert().values(patient_id=key[0], issuer_of_patient_id=key[1],
                                         patient_name=person.patient_name, birth_date=person.birth_date,
                                         sex=person.sex)
            )
            row_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            cache.patients.put(key, (row_id, person))
            return row_id
        row_id = row.id
        if (row.patient_name, row.birth_date, row.sex) == (person.patient_name, person.birth_date, person.sex):
            cache.patients.put(key, (row_id, person))
            return row_id
    connection.execute(_UPDATE_PATIENT, {"row_id": row_id, "new_name": person.patient_name,
                                         "new_birth": person.birth_date, "new_sex": person.sex})
    cache.patients.put(key, (row_id, person))
    return row_id


def _upsert_studies(
    connection: Connection, entries: Sequence[IndexEntry], patient_refs: dict[tuple[str, str], int]
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
    for row in connection.execute(_FIND_STUDIES, {"uids": sorted(first)}).all():
        uid = row.study_instance_uid
        refs[uid] = row.id
        if row.state != RECEIVING:
            reopened.append(uid)
        info = first[uid][0]
        last = last_received[uid] if row.last_received_at is None else max(row.last_received_at, last_received[uid])
        connection.execute(_UPDATE_STUDY, {
            "row_id": row.id,
            "add_count": counts[uid][0],
            "add_bytes": counts[uid][1],
            "new_last": last,
            "new_modalities": _merge_modalities(row.modalities, modalities[uid]),
            **{f"new_{name}": getattr(info, name) for name in _STUDY_ATTRIBUTES},
        })
    created: list[str] = []
    for uid, (info, receipt) in first.items():
        if uid in refs:
            continue
        person = receipt.record.patient
        result = connection.execute(
            studies.insert().values(
                study_instance_uid=uid,
                patient_ref=patient_refs.get(_key(person)),
                patient_id=person.patient_id or None,
                modalities=_merge_modalities(None, modalities[uid]),
                instance_count=counts[uid][0],
                total_bytes=counts[uid][1],
                first_received_at=receipt.received_at,
                last_received_at=last_received[uid],
                calling_ae_title=receipt.calling_ae_title[:16] or None,
                state=RECEIVING,
                stable_count=0,
                **{name: getattr(info, name) for name in _STUDY_ATTRIBUTES},
            )
        )
        refs[uid] = int(result.inserted_primary_key[0])  # type: ignore[index]
        created.append(uid)
    return refs, created, reopened, last_received


def _upsert_series(
    connection: Connection, entries: Sequence[IndexEntry], study_refs: dict[str, int], cache: IdCache
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
    for uid, (info, study_uid) in first.items():
        row_id = cache.series.get(uid)
        if row_id is None:
            row_id = connection.execute(_FIND_SERIES, {"uid": uid}).scalar()
        if row_id is None:
            result = connection.execute(
                series.insert().values(
                    series_instance_uid=uid,
                    study_ref=study_refs[study_uid],
                    instance_count=counts[uid][0],
                    total_bytes=counts[uid][1],
                    **{name: getattr(info, name) for name in _SERIES_ATTRIBUTES},
                )
            )
            row_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        else:
            connection.execute(_UPDATE_SERIES, {
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


def _write_instances(connection: Connection, entries: Sequence[IndexEntry], series_refs: dict[str, int]) -> None:
    new_rows = []
    for entry in entries:
        values = _instance_values(entry.receipt, series_refs[entry.receipt.record.series.series_instance_uid])
        if entry.replaces is None:
            new_rows.append(values)
        else:
            connection.execute(_UPDATE_INSTANCE.values(**values), {"row_id": entry.replaces.id})
    if new_rows:
        connection.execute(_INSERT_INSTANCES, new_rows)


def _move_replaced(connection: Connection, entries: Sequence[IndexEntry]) -> None:
    """Take replaced rows' counts and bytes off the series and study they were counted in."""
    for entry in entries:
        if entry.replaces is not None:
            _take_off_counts(connection, entry.replaces)


def _take_off_counts(connection: Connection, old: StoredInstance) -> None:
    connection.execute(
        series.update()
        .where(series.c.id == old.series_ref)
        .values(instance_count=series.c.instance_count - 1, total_bytes=series.c.total_bytes - old.size_bytes)
    )
    connection.execute(_MOVE_FROM_STUDY, {"uid": old.study_instance_uid, "add_count": -1,
                                          "add_bytes": -old.size_bytes})


def remove_instances(connection: Connection, rows: Sequence[StoredInstance]) -> None:
    """Delete instance rows and take their counts and bytes off their series and studies (which stay)."""
    if not rows:
        return
    connection.execute(instances.delete().where(instances.c.id.in_([row.id for row in rows])))
    for row in rows:
        _take_off_counts(connection, row)


def _merge_modalities(current: str | None, more: Iterable[str]) -> str | None:
    values = set(filter(None, (current or "").split(_MODALITY_SEPARATOR))) | set(more)
    if not values:
        return None
    return _MODALITY_SEPARATOR.join(sorted(values))[:MODALITIES_WIDTH]
