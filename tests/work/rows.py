"""Rows inserted straight into the tables, as HL7 and DICOM intake would leave them."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Mapping

import sqlalchemy as sa

from daemon.labels import LABEL_KEYS
from daemon.store import queue
from daemon.store.database import Database
from daemon.store.queue import Job
from daemon.store.schema import jobs, predictions, reports, studies, study_labels

T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
MODEL = "neurolabel_report:1"
_sequence = itertools.count(1)


def add_report(
    database: Database,
    *,
    accession: str | None = None,
    study_uid: str | None = None,
    patient_id: str | None = "P1",
    state: str = "active",
    supersedes_id: int | None = None,
    created_at: dt.datetime | None = None,
    text: str = "MRI head. No acute intracranial abnormality.",
) -> int:
    with database.begin() as connection:
        return int(
            connection.execute(
                reports.insert().values(
                    source="hl7",
                    accession_number=accession,
                    study_instance_uid=study_uid,
                    patient_id=patient_id,
                    modality="MR",
                    result_status="C" if supersedes_id else "F",
                    observation_time=T0,
                    text=text,
                    state=state,
                    supersedes_id=supersedes_id,
                    created_at=created_at or T0 + dt.timedelta(seconds=next(_sequence)),
                )
            ).inserted_primary_key[0]
        )


def add_study(
    database: Database,
    uid: str,
    *,
    accession: str | None = None,
    patient_id: str | None = "P1",
    study_date: str = "20260301",
    modalities: str = "MR",
    state: str = "stable",
) -> None:
    with database.begin() as connection:
        connection.execute(
            studies.insert().values(
                study_instance_uid=uid,
                accession_number=accession,
                patient_id=patient_id,
                study_date=study_date,
                modalities=modalities,
                instance_count=1,
                total_bytes=1000,
                first_received_at=T0,
                last_received_at=T0,
                state=state,
                stable_at=T0 if state == "stable" else None,
            )
        )


def set_study_state(database: Database, uid: str, state: str) -> None:
    with database.begin() as connection:
        connection.execute(studies.update().where(studies.c.study_instance_uid == uid).values(state=state))


def labels_of(abnormal: int = 0, **positive: int) -> dict[str, int]:
    labels = {key: int(positive.get(key, 0)) for key in LABEL_KEYS}
    labels["abnormal"] = max(abnormal, *labels.values())
    return labels


def add_prediction(
    database: Database, report_id: int, labels: Mapping[str, int] | None = None, model: str = MODEL
) -> int:
    labels = dict(labels or labels_of())
    with database.begin() as connection:
        return int(
            connection.execute(
                predictions.insert().values(
                    report_id=report_id,
                    probabilities={key: 0.9 if value else 0.1 for key, value in labels.items()},
                    labels=labels,
                    thresholds={key: 0.5 for key in LABEL_KEYS},
                    model=model,
                    created_at=T0,
                )
            ).inserted_primary_key[0]
        )


def claim_one(database: Database, kind: str, key: str, payload: Mapping[str, object]) -> Job:
    """Enqueue a job and claim it, as the runner would before calling a handler."""
    with database.begin() as connection:
        queue.enqueue(connection, kind, key, payload)
    claimed = [job for job in queue.claim(database, [kind], "test-instance", limit=100) if job.key == key]
    assert len(claimed) == 1, claimed
    return claimed[0]


def label_rows(database: Database, uid: str | None = None) -> list[sa.Row]:
    query = sa.select(study_labels).order_by(study_labels.c.id)
    if uid is not None:
        query = query.where(study_labels.c.study_instance_uid == uid)
    with database.connect() as connection:
        return connection.execute(query).all()


def job_rows(database: Database, kind: str) -> list[sa.Row]:
    with database.connect() as connection:
        return connection.execute(sa.select(jobs).where(jobs.c.kind == kind).order_by(jobs.c.id)).all()
