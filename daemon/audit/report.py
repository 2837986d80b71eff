"""The audit report: what happened in a period, as HTML with charts plus CSV tables.

`gather` reads the database into a plain `ReportData`; `render_html` and
`write_report` are pure over that data. The report holds counts, times,
ids and labels, never report text or patient identifiers.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import sqlalchemy as sa

from daemon import __version__
from daemon.audit import charts
from daemon.labels import LABEL_KEYS
from daemon.store.database import Database
from daemon.store.schema import audit_events, hl7_messages, instances, jobs, predictions, reports, studies, study_labels

FAILURE_OUTCOMES = ("failure", "rejected")


@dataclass(frozen=True)
class Period:
    since: dt.datetime
    until: dt.datetime

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise ValueError("period bounds must be timezone-aware")
        if self.until <= self.since:
            raise ValueError("the end of the period must be after its start")

    @property
    def hourly(self) -> bool:
        return self.until - self.since <= dt.timedelta(days=3)

    def buckets(self) -> list[str]:
        step = dt.timedelta(hours=1) if self.hourly else dt.timedelta(days=1)
        start = _bucket_start(self.since, self.hourly)
        result = []
        while start < self.until:
            result.append(_bucket_label(start, self.hourly))
            start += step
        return result

    def bucket_of(self, moment: dt.datetime) -> str:
        return _bucket_label(_bucket_start(moment, self.hourly), self.hourly)


@dataclass(frozen=True)
class DriftFlag:
    label: str
    observed: float
    reference: float
    studies: int


@dataclass
class ReportData:
    period: Period
    generated_at: dt.datetime
    volume: dict[str, Counter[str]] = field(default_factory=dict)
    prevalence_by_bucket: dict[str, dict[str, float]] = field(default_factory=dict)
    prevalence: dict[str, float] = field(default_factory=dict)
    labelled_studies: int = 0
    latencies_seconds: dict[str, list[float]] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    failed_jobs: Counter[str] = field(default_factory=Counter)
    unmatched_reports: list[dict[str, object]] = field(default_factory=list)
    unlabelled_studies: list[dict[str, object]] = field(default_factory=list)
    drift: list[DriftFlag] = field(default_factory=list)
    reference_prevalence: dict[str, float] = field(default_factory=dict)


def gather(
    database: Database,
    period: Period,
    *,
    reference_prevalence: Mapping[str, float] | None = None,
    drift_tolerance: float = 0.10,
    drift_min_studies: int = 30,
    unmatched_after: dt.timedelta = dt.timedelta(hours=72),
    now: dt.datetime | None = None,
) -> ReportData:
    now = now or dt.datetime.now(dt.timezone.utc)
    data = ReportData(period=period, generated_at=now, reference_prevalence=dict(reference_prevalence or {}))
    since, until = period.since, period.until
    with database.connect() as connection:

        def times(column: sa.Column, *where: sa.ColumnElement[bool]) -> list[dt.datetime]:
            query = sa.select(column).where(column >= since, column < until, *where)
            return [_aware(row[0]) for row in connection.execute(query)]

        data.volume = {
            "HL7 messages accepted": _bucketed(period, times(hl7_messages.c.received_at, hl7_messages.c.status == "accepted")),
            "HL7 messages rejected": _bucketed(period, times(hl7_messages.c.received_at, hl7_messages.c.status == "rejected")),
            "DICOM instances": _bucketed(period, times(instances.c.received_at, instances.c.generated.is_(False))),
            "reports classified": _bucketed(period, times(predictions.c.created_at)),
            "studies labelled": _bucketed(period, times(study_labels.c.labelled_at)),
        }

        label_rows = connection.execute(
            sa.select(study_labels.c.labelled_at, study_labels.c.labels).where(
                study_labels.c.labelled_at >= since, study_labels.c.labelled_at < until
            )
        ).all()
        data.labelled_studies = len(label_rows)
        by_bucket: dict[str, list[Mapping[str, int]]] = defaultdict(list)
        for labelled_at, labels in label_rows:
            by_bucket[period.bucket_of(_aware(labelled_at))].append(labels)
        data.prevalence_by_bucket = {bucket: _prevalence(rows) for bucket, rows in by_bucket.items()}
        data.prevalence = _prevalence([labels for _, labels in label_rows])

        report_times = connection.execute(
            sa.select(predictions.c.created_at, reports.c.created_at)
            .join(reports, reports.c.id == predictions.c.report_id)
            .where(predictions.c.created_at >= since, predictions.c.created_at < until)
        ).all()
        labelled_times = connection.execute(
            sa.select(study_labels.c.labelled_at, reports.c.created_at)
            .join(reports, reports.c.id == study_labels.c.report_id)
            .where(study_labels.c.labelled_at >= since, study_labels.c.labelled_at < until)
        ).all()
        data.latencies_seconds = {
            "report received to classified": [(_aware(a) - _aware(b)).total_seconds() for a, b in report_times],
            "report received to study labelled": [(_aware(a) - _aware(b)).total_seconds() for a, b in labelled_times],
        }

        data.failures = Counter(
            {
                f"{kind} ({outcome})": int(count)
                for kind, outcome, count in connection.execute(
                    sa.select(audit_events.c.kind, audit_events.c.outcome, sa.func.count())
                    .where(
                        audit_events.c.at >= since,
                        audit_events.c.at < until,
                        audit_events.c.outcome.in_(FAILURE_OUTCOMES),
                    )
                    .group_by(audit_events.c.kind, audit_events.c.outcome)
                )
            }
        )
        data.failed_jobs = Counter(
            {
                kind: int(count)
                for kind, count in connection.execute(
                    sa.select(jobs.c.kind, sa.func.count()).where(jobs.c.state == "failed").group_by(jobs.c.kind)
                )
            }
        )

        cutoff = now - unmatched_after
        labelled_report_ids = sa.select(study_labels.c.report_id)
        data.unmatched_reports = [
            {"report_id": r.id, "accession_number": r.accession_number or "", "received_at": _aware(r.created_at).isoformat()}
            for r in connection.execute(
                sa.select(reports.c.id, reports.c.accession_number, reports.c.created_at)
                .where(
                    reports.c.state == "active",
                    reports.c.created_at < cutoff,
                    reports.c.created_at >= since,
                    reports.c.id.not_in(labelled_report_ids),
                )
                .order_by(reports.c.created_at)
                .limit(1000)
            )
        ]
        labelled_studies = sa.select(study_labels.c.study_instance_uid)
        data.unlabelled_studies = [
            {
                "study_instance_uid": s.study_instance_uid,
                "accession_number": s.accession_number or "",
                "last_received_at": _aware(s.last_received_at).isoformat(),
            }
            for s in connection.execute(
                sa.select(studies.c.study_instance_uid, studies.c.accession_number, studies.c.last_received_at)
                .where(
                    studies.c.last_received_at < cutoff,
                    studies.c.last_received_at >= since,
                    studies.c.study_instance_uid.not_in(labelled_studies),
                )
                .order_by(studies.c.last_received_at)
                .limit(1000)
            )
        ]
    data.drift = detect_drift(
        data.prevalence, data.labelled_studies, data.reference_prevalence, drift_tolerance, drift_min_studies
    )
    return data


def detect_drift(
    observed: Mapping[str, float],
    studies_count: int,
    reference: Mapping[str, float],
    tolerance: float,
    min_studies: int,
) -> list[DriftFlag]:
    """Labels whose prevalence differs from the reference by more than `tolerance` (absolute)."""
    if studies_count < min_studies:
        return []
    return [
        DriftFlag(label, observed[label], reference[label], studies_count)
        for label in LABEL_KEYS
        if label in reference and label in observed and abs(observed[label] - reference[label]) > tolerance
    ]


def render_html(data: ReportData) -> str:
    period = data.period
    buckets = period.buckets()
    volume_chart = charts.bar_chart(
        f"Volume per {'hour' if period.hourly else 'day'}",
        buckets,
        {name: [float(counter.get(b, 0)) for b in buckets] for name, counter in data.volume.items()},
    )
    prevalence_chart = (
        charts.line_chart(
            "Label prevalence over time (share of studies labelled positive)",
            buckets,
            {label: [data.prevalence_by_bucket.get(b, {}).get(label) for b in buckets] for label in LABEL_KEYS},
        )
        if data.prevalence_by_bucket
        else charts.empty_chart("Label prevalence over time", "no studies labelled in this period")
    )
    latency_charts = [
        charts.histogram(f"Latency: {name}", values, unit="s")
        if values
        else charts.empty_chart(f"Latency: {name}", "no data in this period")
        for name, values in data.latencies_seconds.items()
    ]
    failures_chart = (
        charts.bar_chart("Failures by kind", list(data.failures), {"events": [float(v) for v in data.failures.values()]})
        if data.failures
        else charts.empty_chart("Failures by kind", "no failures in this period")
    )
    sections = [
        "<h2>Summary</h2>",
        _table(
            ["measure", "value"],
            [[name, str(sum(counter.values()))] for name, counter in data.volume.items()]
            + [["unmatched reports (older than the expiry)", str(len(data.unmatched_reports))]]
            + [["stored studies without labels (older than the expiry)", str(len(data.unlabelled_studies))]]
            + [["failed jobs (all time)", str(sum(data.failed_jobs.values()))]],
        ),
        "<h2>Drift</h2>",
        _drift_section(data),
        "<h2>Volume</h2>",
        volume_chart,
        "<h2>Label prevalence</h2>",
        prevalence_chart,
        _table(
            ["label", "prevalence in period", "reference"],
            [
                [
                    label,
                    _percent(data.prevalence.get(label)),
                    _percent(data.reference_prevalence.get(label)),
                ]
                for label in LABEL_KEYS
            ],
        ),
        "<h2>Latency</h2>",
        *latency_charts,
        _table(["stage", "n", "p50 (s)", "p95 (s)", "max (s)"], [_latency_row(n, v) for n, v in data.latencies_seconds.items()]),
        "<h2>Failures</h2>",
        failures_chart,
        _table(["failed jobs by kind (all time)", "count"], [[k, str(v)] for k, v in sorted(data.failed_jobs.items())]),
        "<h2>Unmatched reports</h2>",
        _table(["report id", "accession", "received"], [[str(r["report_id"]), str(r["accession_number"]), str(r["received_at"])] for r in data.unmatched_reports]),
        "<h2>Studies without labels</h2>",
        _table(
            ["study instance uid", "accession", "last instance received"],
            [[str(s["study_instance_uid"]), str(s["accession_number"]), str(s["last_received_at"])] for s in data.unlabelled_studies],
        ),
    ]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>neurolabel audit report {escape(_span(period))}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 820px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; font-size: 13px; text-align: left; }}
th {{ background: #f0f3f6; }}
.flag {{ color: #b00020; font-weight: bold; }}
.ok {{ color: #2e7d32; }}
svg {{ display: block; margin: 0.5em 0; }}
</style></head>
<body>
<h1>neurolabel audit report</h1>
<p>Period {escape(_span(period))} (UTC). Generated {escape(data.generated_at.isoformat(timespec="seconds"))}
by neurolabel {escape(__version__)}. This report holds counts, identifiers of studies and reports, and labels;
no report text and no patient identifiers.</p>
{"".join(sections)}
</body></html>
"""


def write_report(data: ReportData, report_dir: Path) -> list[Path]:
    """Write the HTML report and its CSV tables; returns the files written."""
    stem = f"audit-{data.period.since:%Y%m%dT%H%M}-{data.period.until:%Y%m%dT%H%M}"
    folder = report_dir / stem
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "report.html"]
    written[0].write_text(render_html(data), encoding="utf-8")
    buckets = data.period.buckets()
    written.append(
        _write_csv(
            folder / "volume.csv",
            ["bucket", *data.volume],
            [[b, *(str(c.get(b, 0)) for c in data.volume.values())] for b in buckets],
        )
    )
    written.append(
        _write_csv(
            folder / "prevalence.csv",
            ["bucket", *LABEL_KEYS],
            [[b, *(_fmt(data.prevalence_by_bucket.get(b, {}).get(k)) for k in LABEL_KEYS)] for b in buckets],
        )
    )
    written.append(
        _write_csv(
            folder / "latency.csv",
            ["stage", "seconds"],
            [[name, f"{value:.3f}"] for name, values in data.latencies_seconds.items() for value in values],
        )
    )
    written.append(_write_csv(folder / "failures.csv", ["kind", "count"], [[k, str(v)] for k, v in data.failures.items()]))
    written.append(
        _write_csv(
            folder / "unmatched_reports.csv",
            ["report_id", "accession_number", "received_at"],
            [[str(r["report_id"]), str(r["accession_number"]), str(r["received_at"])] for r in data.unmatched_reports],
        )
    )
    written.append(
        _write_csv(
            folder / "unlabelled_studies.csv",
            ["study_instance_uid", "accession_number", "last_received_at"],
            [[str(s["study_instance_uid"]), str(s["accession_number"]), str(s["last_received_at"])] for s in data.unlabelled_studies],
        )
    )
    summary = {
        "period": {"since": data.period.since.isoformat(), "until": data.period.until.isoformat()},
        "labelled_studies": data.labelled_studies,
        "prevalence": data.prevalence,
        "drift": [flag.__dict__ for flag in data.drift],
        "failures": dict(data.failures),
        "unmatched_reports": len(data.unmatched_reports),
    }
    written.append(folder / "summary.json")
    written[-1].write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return written


def _drift_section(data: ReportData) -> str:
    if not data.reference_prevalence:
        return "<p>No reference prevalence is configured or shipped with the model, so drift is not assessed.</p>"
    if not data.drift:
        return (
            f'<p class="ok">No label prevalence far from the reference ({data.labelled_studies} studies labelled in '
            f"this period; flagged when at least 30 studies differ by more than 10 points).</p>"
        )
    rows = [[f.label, _percent(f.observed), _percent(f.reference)] for f in data.drift]
    return '<p class="flag">Label prevalence far from the reference: check the input population and the model.</p>' + _table(
        ["label", "observed", "reference"], rows
    )


def _latency_row(name: str, values: Sequence[float]) -> list[str]:
    if not values:
        return [name, "0", "", "", ""]
    ordered = sorted(values)
    return [
        name,
        str(len(ordered)),
        f"{statistics.median(ordered):.2f}",
        f"{ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]:.2f}",
        f"{ordered[-1]:.2f}",
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return "<p>None.</p>"
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _prevalence(rows: Sequence[Mapping[str, int]]) -> dict[str, float]:
    if not rows:
        return {}
    return {label: sum(int(r.get(label, 0)) for r in rows) / len(rows) for label in LABEL_KEYS}


def _bucketed(period: Period, moments: Sequence[dt.datetime]) -> Counter[str]:
    return Counter(period.bucket_of(moment) for moment in moments)


def _bucket_start(moment: dt.datetime, hourly: bool) -> dt.datetime:
    moment = moment.astimezone(dt.timezone.utc)
    return moment.replace(minute=0, second=0, microsecond=0) if hourly else moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _bucket_label(start: dt.datetime, hourly: bool) -> str:
    return start.strftime("%Y-%m-%d %H:00") if hourly else start.strftime("%Y-%m-%d")


def _aware(moment: dt.datetime) -> dt.datetime:
    """SQLite returns naive datetimes; everything is stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _span(period: Period) -> str:
    return f"{period.since:%Y-%m-%d %H:%M} to {period.until:%Y-%m-%d %H:%M}"


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
