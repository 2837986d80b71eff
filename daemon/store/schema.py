"""All tables, in SQLAlchemy Core. Migrations under daemon/store/migrations follow this file."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING_CONVENTION)

UID = String(64)


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is stored in UTC and read back timezone-aware (UTC) on every backend.

    SQLite keeps no offset (SQLAlchemy drops it without converting) and PostgreSQL converts to the session's
    zone; this type converts on the way in and attaches UTC on the way out, so rows compare and subtract the
    same everywhere. A naive value is taken to be UTC already. Use it for every timestamp column.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite, when the column came through a raw or untyped query
            value = dt.datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


# --- HL7 intake -------------------------------------------------------------

hl7_messages = Table(
    "hl7_messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("peer", String(128), nullable=False),
    Column("sending_application", String(227), nullable=False, default=""),
    Column("sending_facility", String(227), nullable=False, default=""),
    Column("control_id", String(199), nullable=False, default=""),
    Column("message_type", String(32), nullable=False, default=""),
    # MSH-12 as sent.
    Column("version", String(16), nullable=False, default="", server_default=""),
    # The frame as received; for a message over [hl7] max_message_bytes, only its first bytes.
    Column("raw", LargeBinary, nullable=False),
    # Size of the whole frame in bytes.
    Column("size_bytes", Integer, nullable=False, default=0, server_default="0"),
    # sha256 of the segments after MSH: a resend of one MSH-10 must carry the same content.
    Column("content_hash", String(64), nullable=True),
    # accepted | rejected | duplicate
    Column("status", String(16), nullable=False),
    # The application acknowledgement code: AA, AE or AR.
    Column("ack_code", String(2), nullable=False),
    Column("error", Text, nullable=True),
    # HL7 table 0357 code of the error (ERR-3), for rejected messages.
    Column("error_code", String(8), nullable=True),
    # For a duplicate: the accepted message it repeats.
    Column("duplicate_of", Integer, ForeignKey("hl7_messages.id"), nullable=True),
    Column("reprocessed_at", UtcDateTime(), nullable=True),
    # A control id is accepted once per sender; rejected copies may repeat.
    Index(
        "uq_hl7_messages_accepted_control_id",
        "sending_application",
        "sending_facility",
        "control_id",
        unique=True,
        sqlite_where=text("status = 'accepted'"),
        postgresql_where=text("status = 'accepted'"),
    ),
    Index("ix_hl7_messages_status", "status"),
)

reports = Table(
    "reports",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message_id", Integer, ForeignKey("hl7_messages.id"), nullable=True),
    # Where the report came from: "hl7", "backfill", ...
    Column("source", String(16), nullable=False, default="hl7"),
    Column("external_id", String(199), nullable=True),
    Column("accession_number", String(64), nullable=True),
    Column("study_instance_uid", UID, nullable=True),
    Column("patient_id", String(64), nullable=True),
    Column("issuer_of_patient_id", String(64), nullable=True),
    Column("patient_name", String(320), nullable=True),
    # Every PID-3 identifier: [{"id", "authority", "type"}] (patient_id above is the preferred one).
    Column("patient_identifiers", JSON, nullable=True),
    Column("modality", String(16), nullable=True),
    # OBR-4 (universal service identifier) text, e.g. "MRI head".
    Column("procedure", String(200), nullable=True),
    Column("result_status", String(1), nullable=False, default="F"),
    Column("observation_time", UtcDateTime(), nullable=True),
    Column("text", Text, nullable=False),
    # active | superseded | withdrawn
    Column("state", String(16), nullable=False, default="active"),
    Column("supersedes_id", Integer, ForeignKey("reports.id"), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_reports_accession_number", "accession_number"),
    Index("ix_reports_study_instance_uid", "study_instance_uid"),
    Index("ix_reports_patient_id", "patient_id"),
    Index("ix_reports_state", "state"),
    # A backfilled report is stored once per external id (`neurolabel backfill` is idempotent and resumable).
    Index(
        "uq_reports_backfill_external_id",
        "source",
        "external_id",
        unique=True,
        sqlite_where=text("source = 'backfill'"),
        postgresql_where=text("source = 'backfill'"),
    ),
)

# --- DICOM intake -----------------------------------------------------------

patients = Table(
    "patients",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("patient_id", String(64), nullable=False, default=""),
    Column("issuer_of_patient_id", String(64), nullable=False, default=""),
    Column("patient_name", String(320), nullable=True),
    Column("birth_date", String(8), nullable=True),
    Column("sex", String(16), nullable=True),
    UniqueConstraint("patient_id", "issuer_of_patient_id", name="uq_patients_identity"),
)

studies = Table(
    "studies",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("study_instance_uid", UID, nullable=False, unique=True),
    Column("patient_ref", Integer, ForeignKey("patients.id"), nullable=True),
    Column("accession_number", String(64), nullable=True),
    Column("patient_id", String(64), nullable=True),
    Column("study_date", String(8), nullable=True),
    Column("study_time", String(16), nullable=True),
    Column("study_description", String(64), nullable=True),
    Column("modalities", String(64), nullable=True),
    Column("referring_physician", String(320), nullable=True),
    Column("instance_count", Integer, nullable=False, default=0),
    Column("total_bytes", BigInteger, nullable=False, default=0),
    Column("first_received_at", UtcDateTime(), nullable=False),
    Column("last_received_at", UtcDateTime(), nullable=False),
    Column("calling_ae_title", String(16), nullable=True),
    # receiving | stable (no new instance for [dicom] stable_after_seconds); more instances reopen it.
    Column("state", String(16), nullable=False, default="receiving"),
    Column("stable_at", UtcDateTime(), nullable=True),
    # How many times the study became stable; part of the study_stable job key, so a reopened study is redone.
    Column("stable_count", Integer, nullable=False, default=0, server_default="0"),
    Index("ix_studies_accession_number", "accession_number"),
    Index("ix_studies_patient_id", "patient_id"),
    Index("ix_studies_state", "state"),
)

series = Table(
    "series",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("series_instance_uid", UID, nullable=False, unique=True),
    Column("study_ref", Integer, ForeignKey("studies.id"), nullable=False),
    Column("modality", String(16), nullable=True),
    Column("series_number", Integer, nullable=True),
    Column("series_description", String(64), nullable=True),
    Column("body_part_examined", String(16), nullable=True),
    Column("instance_count", Integer, nullable=False, default=0),
    Column("total_bytes", BigInteger, nullable=False, default=0, server_default="0"),
    Index("ix_series_study_ref", "study_ref"),
)

instances = Table(
    "instances",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sop_instance_uid", UID, nullable=False, unique=True),
    Column("sop_class_uid", UID, nullable=False),
    Column("series_ref", Integer, ForeignKey("series.id"), nullable=False),
    Column("study_instance_uid", UID, nullable=False),
    Column("instance_number", Integer, nullable=True),
    Column("transfer_syntax_uid", UID, nullable=False),
    # Relative to [storage] path.
    Column("path", String(400), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("received_at", UtcDateTime(), nullable=False),
    Column("calling_ae_title", String(16), nullable=True),
    Column("peer", String(128), nullable=True),
    # True for objects neurolabel created itself (its SR).
    Column("generated", Boolean, nullable=False, default=False),
    Index("ix_instances_study_instance_uid", "study_instance_uid"),
)

# Instances the DICOM index committer recorded before their files' fsyncs had returned (they run beside the
# commit): those with an id above after_instance_id (NULL: none). One row (id 1, made by the first mark), set in
# the same transaction as those rows and cleared once their fsyncs are done. Checked at start by
# daemon/dicom/recovery.py.
dicom_unsynced = Table(
    "dicom_unsynced",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("after_instance_id", Integer, nullable=True),
)

# --- Work queue ---------------------------------------------------------------

jobs = Table(
    "jobs",
    metadata,
    Column("id", Integer, primary_key=True),
    # classify | link | writeback | forward | ...
    Column("kind", String(32), nullable=False),
    # Deterministic key; a second enqueue of the same (kind, key) while one is
    # not finished is a no-op.
    Column("key", String(255), nullable=False),
    Column("payload", JSON, nullable=False, default=dict),
    # pending | running | done | failed
    Column("state", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("not_before", UtcDateTime(), nullable=False),
    Column("claimed_by", String(128), nullable=True),
    Column("claimed_at", UtcDateTime(), nullable=True),
    # A running job belongs to `claimed_by` until this time; its owner renews it while alive, and any
    # instance puts it back to pending once it has passed (the owner died). See daemon/store/leases.py.
    Column("lease_expires_at", UtcDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime(), nullable=True),
    Index("ix_jobs_claim", "state", "kind", "not_before"),
    Index("ix_jobs_kind_key", "kind", "key"),
    # At most one unfinished job per (kind, key), even when several instances enqueue it at once.
    Index(
        "uq_jobs_active_kind_key",
        "kind",
        "key",
        unique=True,
        sqlite_where=text("state IN ('pending', 'running')"),  # = queue.ACTIVE_PREDICATE
        postgresql_where=text("state IN ('pending', 'running')"),
    ),
    Index("ix_jobs_lease", "state", "lease_expires_at"),
)

# --- Labels -----------------------------------------------------------------

predictions = Table(
    "predictions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("report_id", Integer, ForeignKey("reports.id"), nullable=False),
    Column("probabilities", JSON, nullable=False),
    Column("labels", JSON, nullable=False),
    Column("thresholds", JSON, nullable=True),
    Column("model", String(128), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Index("ix_predictions_report_id", "report_id"),
)

study_labels = Table(
    "study_labels",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("study_instance_uid", UID, nullable=False),
    Column("accession_number", String(64), nullable=True),
    Column("report_id", Integer, ForeignKey("reports.id"), nullable=False),
    Column("prediction_id", Integer, ForeignKey("predictions.id"), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("probabilities", JSON, nullable=False),
    Column("model", String(128), nullable=False),
    Column("labelled_at", UtcDateTime(), nullable=False),
    Column("current", Boolean, nullable=False, default=True),
    Column("superseded_at", UtcDateTime(), nullable=True),
    # Why it stopped being current: "superseded", "withdrawn", "relabelled".
    Column("superseded_reason", String(32), nullable=True),
    Index("ix_study_labels_study_current", "study_instance_uid", "current"),
    Index("ix_study_labels_report_id", "report_id"),
)

# --- Linking reports to studies (daemon/work/link_jobs.py) ------------------------

# Which studies a report belongs to; a report may link to several (multiple_matches = "all").
report_links = Table(
    "report_links",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("report_id", Integer, ForeignKey("reports.id"), nullable=False),
    Column("study_instance_uid", UID, nullable=False),
    # study_uid | accession | supersedes | fallback
    Column("method", String(16), nullable=False),
    Column("linked_at", UtcDateTime(), nullable=False),
    UniqueConstraint("report_id", "study_instance_uid", name="uq_report_links_report_study"),
    Index("ix_report_links_study_instance_uid", "study_instance_uid"),
)

# Where the linking of each classified report stands.
report_link_states = Table(
    "report_link_states",
    metadata,
    Column("report_id", Integer, ForeignKey("reports.id"), primary_key=True),
    # parked (its study is not there yet) | linked | unmatched (parked past [linking] unmatched_after_hours;
    # still linked if its study comes) | withdrawn
    Column("state", String(16), nullable=False),
    Column("parked_at", UtcDateTime(), nullable=True),
    Column("checked_at", UtcDateTime(), nullable=False),
    Column("changed_at", UtcDateTime(), nullable=False),
    # Why it is parked or unmatched (no report text, no patient identifiers).
    Column("reason", String(200), nullable=True),
    Index("ix_report_link_states_state", "state"),
)

# Stable studies and whether a report has found them.
study_link_states = Table(
    "study_link_states",
    metadata,
    Column("study_instance_uid", UID, primary_key=True),
    # waiting (stable, no report linked) | linked | unmatched (waiting past [linking] unmatched_after_hours)
    Column("state", String(16), nullable=False),
    Column("waiting_since", UtcDateTime(), nullable=True),
    Column("changed_at", UtcDateTime(), nullable=False),
    Index("ix_study_link_states_state", "state"),
)

# --- Write-back to DICOM --------------------------------------------------------

# One row per completed write-back of a labels row to the study's DICOM files
# (daemon/work/writeback.py): what was tagged, which SR it wrote and replaced.
writebacks = Table(
    "writebacks",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("study_instance_uid", UID, nullable=False),
    Column("study_label_id", Integer, ForeignKey("study_labels.id"), nullable=False),
    # labels | withdrawn
    Column("action", String(16), nullable=False),
    # done (failures are retried by the job runner and audited)
    Column("state", String(16), nullable=False),
    Column("instances_tagged", Integer, nullable=False, default=0),
    Column("instances_unchanged", Integer, nullable=False, default=0),
    Column("sr_sop_instance_uid", UID, nullable=True),
    Column("sr_series_instance_uid", UID, nullable=True),
    Column("replaced_sr_sop_instance_uid", UID, nullable=True),
    # Destinations ("AE@host:port") a forward job was queued for.
    Column("forwarded_to", JSON, nullable=False, default=list),
    Column("started_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime(), nullable=False),
    Index("ix_writebacks_study_instance_uid", "study_instance_uid"),
)

# --- Audit --------------------------------------------------------------------

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("kind", String(48), nullable=False),
    Column("actor", String(128), nullable=True),
    Column("outcome", String(16), nullable=False),
    Column("identifiers", JSON, nullable=False, default=dict),
    Column("duration_ms", Float, nullable=True),
    Column("detail", Text, nullable=True),
    Index("ix_audit_events_at", "at"),
    Index("ix_audit_events_kind", "kind"),
)
