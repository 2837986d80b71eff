"""The issue's test: traffic through the whole daemon (storescu, mllp_send, the bundled Triton with the shipped
model, forwarding to Orthanc), then

- the audit trail tells each message's and each instance's whole story, in order: received -> acknowledged ->
  report -> classified -> linked -> labelled -> written back -> forwarded; association -> instances -> study;
- the audit file, the log output and the audit report hold none of the patients' names or ids, nor any report
  text;
- /metrics exposes the per-stage metrics with that traffic counted.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.request
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from pydicom.data import get_testdata_file

from daemon.audit.scheduled import write_audit_report
from daemon.store.schema import audit_events, instances, reports, study_labels
from tests.e2e.test_pipeline import MASS, PATIENT_ID, Pipeline, PipelineFactory, labelled, pipeline  # noqa: F401
from tests.peers.orthanc import OrthancServer, orthanc, orthanc_server  # noqa: F401  (fixtures)
from tests.work.conftest import wait_for
from tests.work.test_daemon_labelling import STROKE

pytestmark = [pytest.mark.triton, pytest.mark.slow]

# Who the test patients are (tests/e2e: PID-3, PID-5 and PID-7, and the DICOM template's name).
PATIENT_DATA = (PATIENT_ID, "DOE^JANE", "JANE", "19700101",
                str(pydicom.dcmread(get_testdata_file("MR_small.dcm")).PatientName).split("^")[0])


def audit_rows(p: Pipeline) -> list[sa.Row]:
    with p.database.connect() as connection:
        # In the order things happened: an ACK's row is written shortly after the ACK, with the ACK's time.
        return connection.execute(sa.select(audit_events).order_by(audit_events.c.at, audit_events.c.id)).all()


def story_of_message(rows: list[sa.Row], control_id: str) -> list[str]:
    """The kinds of audit events about one HL7 message and what followed from it, in order."""
    (message,) = [r for r in rows if r.kind == "hl7.message" and r.identifiers.get("control_id") == control_id]
    (report_id,) = message.identifiers["report_ids"]
    label_ids = {r.identifiers["study_label_id"] for r in rows
                 if r.kind == "labels.written" and r.identifiers.get("report_id") == report_id}

    def about(row: sa.Row) -> bool:
        ids = row.identifiers
        return (
            ids.get("control_id") == control_id
            or ids.get("report_id") == report_id
            or (ids.get("study_label_id") in label_ids and row.kind.startswith("writeback."))
        )

    return [row.kind for row in rows if about(row)]


def story_of_study(rows: list[sa.Row], study_uid: str, sop_uids: set[str]) -> list[str]:
    return [
        row.kind for row in rows
        if row.identifiers.get("study_instance_uid") == study_uid or row.identifiers.get("sop_instance_uid") in sop_uids
        or study_uid in row.identifiers.get("study_instance_uids", ())
    ]


def in_order(kinds: list[str], expected: list[str]) -> bool:
    """`expected` appears in `kinds` in that order (other events may come between)."""
    remaining = iter(kinds)
    return all(any(kind == wanted for kind in remaining) for wanted in expected)


def forwarded(p: Pipeline, study_uid: str) -> bool:
    return any(row.kind == "writeback.forward" and row.outcome == "success"
               and row.identifiers.get("study_instance_uid") == study_uid for row in audit_rows(p))


async def test_the_audit_trail_tells_every_story_and_keeps_no_patient_data(
    pipeline: PipelineFactory, orthanc: OrthancServer, caplog: pytest.LogCaptureFixture, tmp_path: Path  # noqa: F811
) -> None:
    caplog.set_level(logging.DEBUG, logger="neurolabel")
    p = await pipeline(f'[writeback]\nforward_to = ["{orthanc.address}"]\n')
    first = await p.send_study("AUD-1", instances_count=2)
    await p.send_report("AUDMSG1", "AUD-1", STROKE)
    await p.send_report("AUDMSG2", "AUD-2", MASS)  # its study comes after it
    second = await p.send_study("AUD-2", instances_count=2)
    for uid in (first, second):
        await labelled(p, uid)
        await wait_for(lambda uid=uid: forwarded(p, uid), timeout=90, what=f"study {uid} forwarded")
    await wait_for(lambda: sum(r.kind == "hl7.ack" for r in audit_rows(p)) == 2, what="ACKs audited")
    metrics = scrape(p)
    config = p.daemon.services.config
    report_files = write_audit_report(config, p.database, dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1))
    with p.database.connect() as connection:
        texts = connection.execute(sa.select(reports.c.text)).scalars().all()
        sops = {
            uid: set(connection.execute(sa.select(instances.c.sop_instance_uid).where(
                instances.c.study_instance_uid == uid, instances.c.generated.is_(False))).scalars())
            for uid in (first, second)
        }
        assert len(connection.execute(sa.select(study_labels)).all()) == 2
    flushed = {row.id for row in audit_rows(p)}
    await p.daemon.component("audit-file").stop(0)  # flush the audit file now (the fixture stops the rest)

    rows = audit_rows(p)
    assert rows[0].kind == "config.load" and rows[0].identifiers["effective_sha256"]
    message_story = ["hl7.message", "hl7.ack", "report.classified", "linking.linked", "labels.written",
                     "writeback.labels", "writeback.forward"]
    for control_id in ("AUDMSG1", "AUDMSG2"):
        kinds = story_of_message(rows, control_id)
        # the message and its report are committed together, then acknowledged
        assert in_order(kinds, message_story) and in_order(kinds, ["report.stored", "hl7.ack"]), (control_id, kinds)
    for uid in (first, second):
        kinds = story_of_study(rows, uid, sops[uid])
        assert kinds.count("dicom.instance") == 2, kinds
        assert in_order(kinds, ["dicom.instance", "dicom.instance", "dicom.study", "labels.written",
                                "writeback.labels", "writeback.forward"]), kinds
    associations = [r for r in rows if r.kind == "dicom.association"]
    assert [r.detail for r in associations] == ["accepted", "released"] * 2
    assert all(r.actor and "@" in r.actor and r.duration_ms is not None for r in associations if r.detail == "released")
    unsuccessful = [(r.kind, r.outcome, r.detail) for r in rows if r.outcome != "success"]
    assert not unsuccessful

    sentences = {sentence.strip().lower() for text in texts for sentence in text.replace("\n", ".").split(".")
                 if len(sentence.strip()) > 12}
    audit_file = config.audit.log_file.read_text(encoding="utf-8")
    assert {json.loads(line)["id"] for line in audit_file.splitlines()} >= flushed
    outputs = {"audit file": audit_file, "log output": caplog.text,
               **{f.name: f.read_text(encoding="utf-8") for f in report_files if f.suffix in (".html", ".csv")}}
    for where, text in outputs.items():
        leaked = [item for item in PATIENT_DATA if item in text] + [s for s in sentences if s in text.lower()]
        assert not leaked, f"{where} holds {leaked}"

    expect_metrics(metrics)


def scrape(p: Pipeline) -> str:
    port = p.daemon.component("http").port  # type: ignore[attr-defined]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def expect_metrics(text: str) -> None:
    families = {family.name: family for family in text_string_to_metric_families(text)}

    def value(name: str, **labels: str) -> float:
        family = families[name]
        sample = {"counter": f"{name}_total", "histogram": f"{name}_count", "gauge": name}[family.type]
        return sum(s.value for s in family.samples
                   if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))

    assert value("neurolabel_hl7_messages", outcome="accepted") == 2
    assert families["neurolabel_hl7_ack_seconds"].type == "histogram" and value("neurolabel_hl7_ack_seconds") == 2
    assert value("neurolabel_dicom_instances", outcome="stored") == 4
    assert value("neurolabel_dicom_received_bytes", outcome="stored") > 0
    assert value("neurolabel_dicom_store_seconds") == 4
    assert value("neurolabel_dicom_associations", outcome="accepted") == 2
    assert value("neurolabel_jobs_finished", kind="classify", outcome="done") == 2
    # Link jobs run in batches, timed once a batch: both reports' links may share one.
    assert value("neurolabel_job_seconds", kind="link") >= 1
    assert value("neurolabel_classify_batch_size") >= 1 and value("neurolabel_triton_seconds") >= 1
    assert value("neurolabel_reports_classified") == 2
    assert value("neurolabel_triton_ready") == 1
    assert value("neurolabel_writebacks", outcome="success") >= 2
    assert value("neurolabel_forwards", outcome="success") >= 2
    assert value("neurolabel_component_up", component="triton") == 1
    assert "neurolabel_jobs" in families and families["neurolabel_jobs"].type == "gauge"
