"""Audit events written from more than one place (the inference worker, backfill, relabel)."""

from __future__ import annotations

from daemon.audit import trail

REPORT_CLASSIFIED = "report.classified"


def classified_event(
    report_id: int,
    prediction_id: int,
    model: str,
    batch_size: int,
    batch_ms: float | None,
    *,
    source: str | None = None,
) -> trail.AuditEvent:
    """The "report.classified" event: which model labelled the report, in a batch of how many, in how long (written
    with `trail.record_many`, a batch's events at once)."""
    return trail.AuditEvent(
        REPORT_CLASSIFIED,
        trail.SUCCESS,
        identifiers={
            "report_id": report_id,
            "prediction_id": prediction_id,
            "model": model,
            "batch_size": batch_size,
            "source": source,
        },
        duration_ms=round(batch_ms, 1) if batch_ms is not None else None,
    )
