"""The audit report: data gathered from the tables, rendered as HTML with charts and CSV, shown in Chromium."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest

from daemon.audit import trail
from daemon.audit.report import Period, detect_drift, gather, render_html, write_report
from daemon.config import Config
from daemon.labels import LABEL_KEYS
from daemon.store.database import Database, open_database
from daemon.store.migrate import upgrade_to_head
from daemon.store.schema import audit_events, hl7_messages, predictions, reports, studies, study_labels

T0 = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.timezone.utc)


def _labels(**positive: int) -> dict[str, int]:
    return {key: positive.get(key, 0) for key in LABEL_KEYS}


def _seed(database: Database) -> None:
    with database.begin() as c:
        for index in range(6):
            at = T0 + dt.timedelta(hours=index)
            message = c.execute(
                hl7_messages.insert().values(
                    received_at=at, peer="127.0.0.1", sending_application="RIS", sending_facility="H",
                    control_id=f"M{index}", message_type="ORU^R01", raw=b"MSH|...", status="accepted", ack_code="AA",
                )
            ).inserted_primary_key[0]
            report = c.execute(
                reports.insert().values(
                    message_id=message, accession_number=f"ACC{index}", patient_id="SECRET-PID", patient_name="Doe^Jane",
                    text="Secret report text.", state="active", created_at=at, result_status="F",
                )
            ).inserted_primary_key[0]
            if index < 4:
                labels = _labels(abnormal=1, mass=1) if index % 2 else _labels()
                prediction = c.execute(
                    predictions.insert().values(
                        report_id=report, probabilities={k: 0.5 for k in LABEL_KEYS}, labels=labels,
                        model="neurolabel_report:1", created_at=at + dt.timedelta(seconds=2 + index),
                    )
                ).inserted_primary_key[0]
                c.execute(
                    study_labels.insert().values(
                        study_instance_uid=f"1.2.3.{index}", accession_number=f"ACC{index}", report_id=report,
                        prediction_id=prediction, labels=labels, probabilities={k: 0.5 for k in LABEL_KEYS},
                        model="neurolabel_report:1", labelled_at=at + dt.timedelta(seconds=5 + index), current=True,
                    )
                )
        c.execute(
            studies.insert().values(
                study_instance_uid="1.2.3.99", accession_number="ACC99", first_received_at=T0, last_received_at=T0,
                state="stable", instance_count=3, total_bytes=100,
            )
        )
        for kind, outcome in (("hl7.message", trail.REJECTED), ("hl7.message", trail.REJECTED), ("dicom.instance", trail.FAILURE)):
            c.execute(audit_events.insert().values(at=T0, kind=kind, outcome=outcome, identifiers={}))


@pytest.fixture
def database(tmp_path: Path) -> Database:
    db = open_database(f"sqlite:///{tmp_path / 'audit.db'}")
    upgrade_to_head(db)
    _seed(db)
    return db


def test_gather_counts_prevalence_latency_failures_and_unmatched(database: Database) -> None:
    period = Period(T0, T0 + dt.timedelta(days=1))
    data = gather(database, period, now=T0 + dt.timedelta(days=5), reference_prevalence={"mass": 0.9})
    assert sum(data.volume["HL7 messages accepted"].values()) == 6
    assert data.volume["HL7 messages accepted"]["2026-11-20 08:00"] == 1
    assert data.labelled_studies == 4
    assert data.prevalence["mass"] == 0.5 and data.prevalence["acute_stroke"] == 0.0
    assert sorted(data.latencies_seconds["report received to classified"]) == [2.0, 3.0, 4.0, 5.0]
    assert data.failures == {"hl7.message (rejected)": 2, "dicom.instance (failure)": 1}
    assert [r["accession_number"] for r in data.unmatched_reports] == ["ACC4", "ACC5"]
    assert [s["study_instance_uid"] for s in data.unlabelled_studies] == ["1.2.3.99"]
    assert data.drift == []  # fewer than 30 studies: no drift verdict


def test_drift_flags_labels_far_from_reference() -> None:
    flags = detect_drift({"mass": 0.40, "atrophy": 0.12}, 100, {"mass": 0.15, "atrophy": 0.10}, 0.10, 30)
    assert [(f.label, f.observed, f.reference) for f in flags] == [("mass", 0.40, 0.15)]
    assert detect_drift({"mass": 0.40}, 29, {"mass": 0.15}, 0.10, 30) == []


def test_report_files_hold_no_text_or_patient_identifiers(database: Database, tmp_path: Path) -> None:
    data = gather(database, Period(T0, T0 + dt.timedelta(days=1)), now=T0 + dt.timedelta(days=5))
    written = write_report(data, tmp_path / "reports")
    names = {p.name for p in written}
    assert {"report.html", "volume.csv", "prevalence.csv", "latency.csv", "failures.csv", "summary.json"} <= names
    for path in written:
        content = path.read_text()
        assert "SECRET-PID" not in content and "Doe^Jane" not in content and "Secret report text" not in content
    html = (tmp_path / "reports").glob("*/report.html").__next__().read_text()
    assert html.count("<svg") >= 5 and "<img" not in html and "http" not in html.replace("http://www.w3.org/2000/svg", "")


def test_period_must_be_ordered_and_aware() -> None:
    with pytest.raises(ValueError):
        Period(T0, T0)
    with pytest.raises(ValueError):
        Period(T0.replace(tzinfo=None), T0 + dt.timedelta(hours=1))


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium not installed")
def test_report_renders_in_headless_chromium(database: Database, tmp_path: Path) -> None:
    data = gather(database, Period(T0, T0 + dt.timedelta(days=1)), now=T0 + dt.timedelta(days=5))
    html = write_report(data, tmp_path / "reports")[0]
    screenshot = tmp_path / "report.png"
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--hide-scrollbars",
    ]
    subprocess.run(
        [CHROMIUM, *flags, "--window-size=900,3000", f"--screenshot={screenshot}", html.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", html.as_uri()], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    assert "neurolabel audit report" in dom and dom.count("<svg") >= 5
    assert screenshot.stat().st_size > 20_000  # a rendered page with charts, not a blank image
    shutil.copy(screenshot, tmp_path.parent / "audit-report-screenshot.png")


def test_cli_report_writes_files(tmp_path: Path, test_config: Config) -> None:
    from daemon.cli import main

    config = tmp_path / "c.toml"
    config.write_text(
        f'[database]\nurl = "{test_config.database.url}"\n[audit]\nreport_dir = "{tmp_path / "out"}"\n'
    )
    assert main(["report", "--config", str(config), "--since", "2026-11-20", "--until", "2026-11-21"]) == 0
    assert list((tmp_path / "out").glob("audit-20261120T0000-20261121T0000/report.html"))
    assert main(["report", "--config", str(config), "--since", "yesterday"]) == 2
