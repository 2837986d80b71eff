"""After the load: wait until the daemon has done everything, then check the database and the files.

Exactly once means: one accepted HL7 message per acknowledged MSH-10, one report per accession, one
prediction per report, one labels row per study (current, from that report), every acknowledged instance
indexed once with its file on disk carrying the current labels, one SR per study (one index row, one file,
listing every instance), and nothing else on disk (no orphan SR, no temporary file). No job may be left
pending, running or failed.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import sqlalchemy as sa

from daemon.dicom.private_tags import read_label_tags
from daemon.dicom.sr import read_label_sr
from daemon.store.schema import hl7_messages, instances, jobs, predictions, reports, study_labels, writebacks
from tests.reliability.daemon_process import DaemonProcess
from tests.reliability.load import Case, Ledger, Load

ACTIVE_STATES = ("pending", "running")


@dataclass(frozen=True)
class Verified:
    messages: int
    reports: int
    studies: int
    instances: int
    srs: int
    writebacks: int


def unfinished(daemon: DaemonProcess, study_uids: Iterable[str]) -> list[str]:
    """What is still to do: active jobs, and studies without current labels or whose write-back is not done."""
    wanted = set(study_uids)
    with daemon.reading() as connection:
        active = connection.execute(
            sa.select(jobs.c.kind, sa.func.count()).where(jobs.c.state.in_(ACTIVE_STATES)).group_by(jobs.c.kind)
        ).all()
        labelled = dict(connection.execute(
            sa.select(study_labels.c.study_instance_uid, study_labels.c.id).where(study_labels.c.current.is_(True))
        ).all())
        written = set(connection.execute(sa.select(writebacks.c.study_label_id)).scalars())
    problems = [f"{count} {kind} jobs active" for kind, count in active]
    missing = [uid for uid in wanted if uid not in labelled]
    if missing:
        problems.append(f"{len(missing)} studies without labels")
    unwritten = [uid for uid in wanted if uid in labelled and labelled[uid] not in written]
    if unwritten:
        problems.append(f"{len(unwritten)} studies not written back")
    return problems


def settle(daemon: DaemonProcess, ledger: Ledger, timeout: float) -> None:
    """Wait until nothing is left to do (twice in a row, a moment apart)."""
    deadline = time.monotonic() + timeout
    quiet = 0
    problems: list[str] = []
    while quiet < 2:
        if not daemon.alive:
            raise AssertionError(f"the daemon died:\n{daemon.log_text()[-3000:]}")
        problems = unfinished(daemon, ledger.studies())
        quiet = 0 if problems else quiet + 1
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled after {timeout} s: {'; '.join(problems)}")
        time.sleep(0.5)


def finish(
    daemon: DaemonProcess, load: Load, *, idle_timeout: float = 180.0, settle_timeout: float = 180.0
) -> Verified:
    """Stop the producers, let the senders deliver what they hold and the daemon do all its work; verify."""
    for producer in load.producers:
        producer.stop()
    load.wait_idle(idle_timeout)
    load.close()
    settle(daemon, load.ledger, timeout=settle_timeout)
    return verify(daemon, load.ledger)


def verify(daemon: DaemonProcess, ledger: Ledger) -> Verified:
    """Check everything the ledger says was acknowledged; raise one AssertionError listing every problem."""
    problems: list[str] = []
    storage = daemon.config.storage.path
    cases_by_study = ledger.studies()
    with daemon.reading() as connection:
        accepted = Counter(connection.execute(
            sa.select(hl7_messages.c.control_id).where(hl7_messages.c.status == "accepted")
        ).scalars())
        report_rows = connection.execute(sa.select(reports.c.id, reports.c.accession_number, reports.c.state)).all()
        prediction_counts = Counter(connection.execute(sa.select(predictions.c.report_id)).scalars())
        label_rows = connection.execute(sa.select(study_labels)).all()
        instance_rows = connection.execute(sa.select(instances)).all()
        writeback_rows = connection.execute(sa.select(writebacks)).all()
        failed = connection.execute(
            sa.select(jobs.c.kind, jobs.c.key, jobs.c.last_error).where(jobs.c.state == "failed")
        ).all()
    problems += [f"failed job {row.kind} {row.key}: {row.last_error}" for row in failed]

    # HL7: every acknowledged message stored once, one active report per accession, classified once.
    reports_by_accession: dict[str, list] = defaultdict(list)
    for row in report_rows:
        reports_by_accession[row.accession_number].append(row)
    report_of: dict[str, int] = {}
    for control_id, case in ledger.hl7_acked.items():
        if accepted[control_id] != 1:
            problems.append(f"MSH-10 {control_id}: {accepted[control_id]} accepted messages")
        rows = reports_by_accession.get(case.accession, [])
        if len(rows) != 1 or rows[0].state != "active":
            problems.append(f"accession {case.accession}: reports {[(r.id, r.state) for r in rows]}")
            continue
        report_of[case.accession] = rows[0].id
        if prediction_counts[rows[0].id] != 1:
            problems.append(f"report {rows[0].id}: {prediction_counts[rows[0].id]} predictions")

    # Labels: one row per study, current, from the case's report.
    labels_by_study: dict[str, list] = defaultdict(list)
    for row in label_rows:
        labels_by_study[row.study_instance_uid].append(row)
    current: dict[str, object] = {}
    for uid, case in cases_by_study.items():
        rows = labels_by_study.get(uid, [])
        if len(rows) != 1 or not rows[0].current:
            problems.append(f"study {uid}: labels rows {[(r.id, r.current, r.superseded_reason) for r in rows]}")
            continue
        if case.accession in report_of and rows[0].report_id != report_of[case.accession]:
            problems.append(f"study {uid}: labelled from report {rows[0].report_id}, not {report_of[case.accession]}")
        current[uid] = rows[0]

    # Instances: each acknowledged one indexed once, its file there with the current labels.
    originals: dict[str, list] = defaultdict(list)
    generated: dict[str, list] = defaultdict(list)
    sop_counts = Counter(row.sop_instance_uid for row in instance_rows)
    for row in instance_rows:
        (generated if row.generated else originals)[row.study_instance_uid].append(row)
    indexed = {row.sop_instance_uid: row for row in instance_rows if not row.generated}
    for sop_uid, case in ledger.instances_acked.items():
        row = indexed.get(sop_uid)
        if row is None or sop_counts[sop_uid] != 1:
            problems.append(f"instance {sop_uid} of {case.accession}: {sop_counts[sop_uid]} index rows")
            continue
        path = storage / row.path
        if not path.is_file():
            problems.append(f"instance {sop_uid}: file {row.path} missing")
            continue
        dataset = pydicom.dcmread(path)
        if str(dataset.SOPInstanceUID) != sop_uid:
            problems.append(f"instance {sop_uid}: file holds {dataset.SOPInstanceUID}")
        labels: Any = current.get(case.study_uid)
        record = read_label_tags(dataset)
        if labels is not None and (record is None or dict(record.labels) != dict(labels.labels)):
            problems.append(f"instance {sop_uid}: tags {record and dict(record.labels)} != labels {labels.labels}")

    # SR: one per labelled study, listing every instance; nothing else on disk.
    srs = 0
    for uid, labels in current.items():
        rows = generated.get(uid, [])
        if len(rows) != 1:
            problems.append(f"study {uid}: {len(rows)} SR index rows")
            continue
        srs += 1
        sr = pydicom.dcmread(storage / rows[0].path)
        record = read_label_sr(sr)
        if record is None or dict(record.labels) != dict(labels.labels):  # type: ignore[attr-defined]
            problems.append(f"study {uid}: SR labels {record and dict(record.labels)}")
        referenced = _referenced_instances(sr)
        expected = {row.sop_instance_uid for row in originals.get(uid, [])}
        if referenced != expected:
            problems.append(f"study {uid}: SR lists {len(referenced)} instances, {len(expected)} stored")
        on_disk = {p.relative_to(storage).as_posix() for p in (storage / uid).rglob("*") if p.is_file()}
        indexed_paths = {row.path for row in originals.get(uid, [])} | {rows[0].path}
        if on_disk != indexed_paths:
            problems.append(f"study {uid}: files not indexed {sorted(on_disk - indexed_paths)}, "
                            f"indexed not on disk {sorted(indexed_paths - on_disk)}")
    leftovers = [p for p in (storage / ".incoming").glob("*")] if (storage / ".incoming").is_dir() else []
    if leftovers and not daemon.alive:
        problems.append(f"{len(leftovers)} files left in .incoming")
    if problems:
        shown = "\n  ".join(problems[:40])
        raise AssertionError(f"{len(problems)} problems after the run:\n  {shown}")
    return Verified(
        messages=len(ledger.hl7_acked),
        reports=len(report_of),
        studies=len(current),
        instances=len(ledger.instances_acked),
        srs=srs,
        writebacks=len(writeback_rows),
    )


def _referenced_instances(sr: pydicom.Dataset) -> set[str]:
    found: set[str] = set()
    for study in sr.get("CurrentRequestedProcedureEvidenceSequence", []):
        for series in study.get("ReferencedSeriesSequence", []):
            for item in series.get("ReferencedSOPSequence", []):
                found.add(str(item.ReferencedSOPInstanceUID))
    return found


def case_summary(cases: Iterable[Case]) -> dict[str, int]:
    items = list(cases)
    return {"cases": len(items), "instances": sum(len(c.sop_uids) for c in items)}


def tree_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
