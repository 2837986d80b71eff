"""The statements of every write-back, compiled once per dialect and run on the DBAPI cursor (daemon/store/driver.py).

A write-back reads its labels row, the study's stored instances and its current SR, then records the new file
sizes, the SR's instance (and series), the study's totals, the writebacks row and an audit event: about a
dozen statements a study, each of which cost ~0.1 ms of SQLAlchemy's execution (cache key, context,
parameter and result processing) over SQLite's own work. The same SQL runs on the caller's connection (same
transaction), the values converted by the columns' own bind and result processors, so the rows are those
`connection.execute` reads and writes (tests/work/test_writeback_sql.py compares them on SQLite and
PostgreSQL). Rows come back as named tuples with the selected columns' keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from daemon.audit.trail import DriverAudit
from daemon.store.driver import DriverStatement, row_type
from daemon.store.schema import instances, series, studies, study_labels, writebacks

LABEL_ROW = sa.select(study_labels).where(study_labels.c.id == sa.bindparam("label_id"))
STORED_INSTANCES = (
    sa.select(instances.c.id, instances.c.sop_instance_uid, instances.c.path, instances.c.size_bytes,
              instances.c.series_ref)
    .where(instances.c.study_instance_uid == sa.bindparam("uid"), instances.c.generated.is_(False))
    .order_by(instances.c.id)
)
CURRENT_SR = (
    sa.select(instances.c.id, instances.c.sop_instance_uid, instances.c.sop_class_uid, instances.c.path,
              instances.c.instance_number, series.c.series_instance_uid)
    .join(series, series.c.id == instances.c.series_ref)
    .where(instances.c.study_instance_uid == sa.bindparam("uid"), instances.c.generated.is_(True))
    .order_by(instances.c.id.desc())
)
UPDATE_SIZE = instances.update().where(instances.c.id == sa.bindparam("instance_id")).values(
    size_bytes=sa.bindparam("size")
)
STUDY_ID = sa.select(studies.c.id).where(studies.c.study_instance_uid == sa.bindparam("uid"))
SERIES_ID = sa.select(series.c.id).where(series.c.series_instance_uid == sa.bindparam("uid"))
GENERATED_ROWS = sa.select(instances.c.id, instances.c.size_bytes).where(
    instances.c.study_instance_uid == sa.bindparam("uid"), instances.c.generated.is_(True)
)
GROW_SERIES = series.update().where(series.c.id == sa.bindparam("series_id")).values(
    total_bytes=series.c.total_bytes + sa.bindparam("delta")
)
GROW_STUDY = studies.update().where(studies.c.study_instance_uid == sa.bindparam("uid")).values(
    total_bytes=studies.c.total_bytes + sa.bindparam("delta")
)
DELETE_INSTANCE = instances.delete().where(instances.c.id == sa.bindparam("instance_id"))
SET_SR_SERIES = series.update().where(series.c.id == sa.bindparam("series_id")).values(
    instance_count=sa.bindparam("count"), total_bytes=sa.bindparam("size")
)
CHANGE_STUDY_COUNTS = studies.update().where(studies.c.id == sa.bindparam("study_id")).values(
    instance_count=studies.c.instance_count + sa.bindparam("count"),
    total_bytes=studies.c.total_bytes + sa.bindparam("delta"),
)
SERIES_KEYS = ("series_instance_uid", "study_ref", "modality", "series_number", "series_description",
               "instance_count", "total_bytes")
INSTANCE_KEYS = ("sop_instance_uid", "sop_class_uid", "series_ref", "study_instance_uid", "instance_number",
                 "transfer_syntax_uid", "path", "size_bytes", "received_at", "generated")
WRITEBACK_KEYS = ("study_instance_uid", "study_label_id", "action", "state", "instances_tagged",
                  "instances_unchanged", "sr_sop_instance_uid", "sr_series_instance_uid",
                  "replaced_sr_sop_instance_uid", "forwarded_to", "started_at", "finished_at")


@dataclass(frozen=True)
class Query:
    """A SELECT compiled for the driver whose rows come back as named tuples of its columns' keys."""

    statement: DriverStatement
    row: Any  # the named tuple type

    @classmethod
    def compile(cls, select: sa.Select[Any], dialect: Dialect, name: str) -> Query:
        return cls(DriverStatement.compile(select, dialect), row_type(select, name))

    def one(self, cursor: Any, values: dict[str, Any]) -> Any | None:
        found = self.statement.fetchone(cursor, values)
        return None if found is None else self.row(*found)

    def all(self, cursor: Any, values: dict[str, Any]) -> list[Any]:
        return [self.row(*found) for found in self.statement.fetchall(cursor, values)]


@dataclass(frozen=True)
class WritebackStatements:
    """Every write-back's statements for one dialect (build once per database with `for_dialect`)."""

    label_row: Query
    stored_instances: Query
    current_sr: Query
    study_id: Query
    series_id: Query
    generated_rows: Query
    update_size: DriverStatement
    grow_series: DriverStatement
    grow_study: DriverStatement
    insert_series: DriverStatement
    delete_instance: DriverStatement
    insert_instance: DriverStatement
    set_sr_series: DriverStatement
    change_study_counts: DriverStatement
    insert_writeback: DriverStatement
    audit: DriverAudit

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> WritebackStatements:
        compile_ = DriverStatement.compile
        return cls(
            label_row=Query.compile(LABEL_ROW, dialect, "LabelRow"),
            stored_instances=Query.compile(STORED_INSTANCES, dialect, "StoredInstance"),
            current_sr=Query.compile(CURRENT_SR, dialect, "CurrentSr"),
            study_id=Query.compile(STUDY_ID, dialect, "StudyId"),
            series_id=Query.compile(SERIES_ID, dialect, "SeriesId"),
            generated_rows=Query.compile(GENERATED_ROWS, dialect, "GeneratedRow"),
            update_size=compile_(UPDATE_SIZE, dialect),
            grow_series=compile_(GROW_SERIES, dialect),
            grow_study=compile_(GROW_STUDY, dialect),
            insert_series=DriverStatement.insert_returning_id(series, dialect, SERIES_KEYS),
            delete_instance=compile_(DELETE_INSTANCE, dialect),
            insert_instance=compile_(instances.insert(), dialect, INSTANCE_KEYS),
            set_sr_series=compile_(SET_SR_SERIES, dialect),
            change_study_counts=compile_(CHANGE_STUDY_COUNTS, dialect),
            insert_writeback=compile_(writebacks.insert(), dialect, WRITEBACK_KEYS),
            audit=DriverAudit.for_dialect(dialect),
        )
