"""`neurolabel relabel`: classify a selection of reports again (e.g. with a newer model), provenance kept.

Each selected report gets a new predictions row; each of its stable linked studies gets a new current
labels row (the previous one kept, with reason "relabelled") and a write-back job, which the running
daemon picks up. Reports whose newest prediction already comes from the same model name:version are
left as they are.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from daemon.audit import trail
from daemon.audit.events import classified_event
from daemon.config import Config
from daemon.inference.prediction import Classifier, InferenceUnavailable
from daemon.store.database import Database
from daemon.store.schema import predictions, reports
from daemon.work import sidecar
from daemon.work.classify import store_prediction

log = logging.getLogger("neurolabel.relabel")

BATCH_SIZE = 64
AUDIT_RELABEL = "reprocess.relabel"


@dataclass(frozen=True)
class Selection:
    since: dt.datetime | None = None  # reports received at or after
    accessions: tuple[str, ...] = ()


@dataclass(frozen=True)
class RelabelSummary:
    model: str
    selected: int
    classified: int
    unchanged: int  # already labelled by this model
    labels_written: int


def selected_reports(database: Database, selection: Selection) -> list[tuple[int, str | None]]:
    """(report id, model of its newest prediction) of the active, classified reports in the selection."""
    newest = (
        sa.select(predictions.c.report_id, sa.func.max(predictions.c.id).label("prediction_id"))
        .group_by(predictions.c.report_id)
        .subquery()
    )
    query = (
        sa.select(reports.c.id, predictions.c.model)
        .join(newest, newest.c.report_id == reports.c.id)
        .join(predictions, predictions.c.id == newest.c.prediction_id)
        .where(reports.c.state == sidecar.REPORT_ACTIVE)
        .order_by(reports.c.id)
    )
    if selection.since is not None:
        query = query.where(reports.c.created_at >= selection.since)
    if selection.accessions:
        query = query.where(reports.c.accession_number.in_(list(selection.accessions)))
    with database.connect() as connection:
        return [(row.id, row.model) for row in connection.execute(query)]


async def relabel(
    database: Database, classifier: Classifier, selection: Selection, *, batch_size: int = BATCH_SIZE
) -> tuple[RelabelSummary, list[sidecar.WritebackQueued]]:
    info = await classifier.model_info()
    chosen = selected_reports(database, selection)
    todo = [report_id for report_id, model in chosen if model != info.model]
    queued: list[sidecar.WritebackQueued] = []
    classified = 0
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        texts = _texts(database, batch)
        results = await classifier.classify([texts[report_id] for report_id in batch])
        now = dt.datetime.now(dt.timezone.utc)
        with database.begin() as connection:
            for report_id, prediction in zip(batch, results):
                prediction_id = store_prediction(connection, report_id, prediction, info.thresholds, now)
                event = classified_event(report_id, prediction_id, prediction.model, len(batch), None, source="relabel")
                trail.record_many(connection, [event])
                for uid in sidecar.linked_study_uids(connection, report_id):
                    written = sidecar.label_study(connection, uid, now)
                    if written is not None:
                        queued.append(written)
        classified += len(batch)
        log.info("relabelled %d/%d report(s) with %s", classified, len(todo), info.model)
    summary = RelabelSummary(info.model, len(chosen), classified, len(chosen) - len(todo), len(queued))
    with database.begin() as connection:
        trail.record(connection, AUDIT_RELABEL, trail.SUCCESS, identifiers=dataclasses.asdict(summary),
                     detail=f"since {selection.since.isoformat() if selection.since else '-'}, "
                     f"{len(selection.accessions)} accession(s) named")
    return summary, queued


def _texts(database: Database, report_ids: Sequence[int]) -> dict[int, str]:
    with database.connect() as connection:
        rows = connection.execute(sa.select(reports.c.id, reports.c.text).where(reports.c.id.in_(list(report_ids))))
        return {row.id: row.text for row in rows}


async def run_relabel(
    config: Config, database: Database, selection: Selection, *, model: str | None = None
) -> RelabelSummary:
    """`neurolabel relabel`: through the configured Triton; ConnectionError when it is not serving the model."""
    from daemon.inference.triton_remote import connect_classifier
    from daemon.inference.triton_server import grpc_url

    url, name = grpc_url(config), model or config.triton.model
    async with connect_classifier(config, name) as classifier:
        if not await classifier.is_ready():
            raise ConnectionError(
                f"Triton at {url} is not serving model {name!r}: start the daemon (`neurolabel run`) or the "
                "bundled server (`neurolabel triton`), or set [triton] url"
            )
        try:
            summary, _queued = await relabel(
                database, classifier, selection, batch_size=config.workers.classify_batch_size
            )
        except InferenceUnavailable as exc:
            raise ConnectionError(f"{exc}; the reports done so far are kept: run again to finish") from None
    return summary
