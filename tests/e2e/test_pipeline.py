"""End to end with real peers: DCMTK storescu sends a study, python-hl7's mllp_send its report, the daemon
(in-process, every port 0) classifies it through the bundled Triton with the shipped model, links it and
writes the sidecar labels (and the DICOM write-back into its stored files).

Both arrival orders, a correction, a cancellation, a report that never finds its study, and Triton killed
and restarted in the middle. The assertions through a destination PACS (Orthanc) live with the write-back
tests; `pipeline(forward_to=...)` lets them reuse this daemon.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import sqlalchemy as sa
from pydicom.uid import generate_uid

from daemon.app import Daemon, start_daemon, stop_daemon
from daemon.dicom.private_tags import read_label_tags
from daemon.inference.component import TritonComponent
from daemon.inference.local import LocalClassifier
from daemon.store.schema import audit_events, instances, jobs, report_link_states, reports, study_labels
from tests.conftest import make_test_config
from tests.dicom.conftest import Dcmtk, find_dcmtk, run_tool
from tests.dicom.conftest import pydicom_file
from tests.hl7.messages import oru
from tests.work.conftest import wait_for
from tests.work.test_daemon_labelling import MODEL_DIR, NORMAL, STROKE, triton_missing

pytestmark = [pytest.mark.triton, pytest.mark.slow]

MLLP_SEND = Path(sys.executable).with_name("mllp_send")
PATIENT_ID = "MRN12345"
MASS = ("FINDINGS: A 3 cm extra-axial dural-based enhancing mass over the left convexity with mild mass effect. "
        "IMPRESSION: Left convexity meningioma.")


@dataclass
class Pipeline:
    daemon: Daemon
    dcmtk: Dcmtk
    tmp_path: Path

    @property
    def database(self) -> Any:
        return self.daemon.services.database

    async def send_study(
        self, accession: str, *, instances_count: int = 3, study_uid: str | None = None, first_number: int = 1
    ) -> str:
        """storescu an MR study of `instances_count` instances; returns its Study Instance UID."""
        uid = study_uid or generate_uid()
        folder = self.tmp_path / "studies" / uid / str(first_number)
        files = write_study(folder, uid, accession, instances_count, first_number)
        port = self.daemon.component("dicom").port  # type: ignore[attr-defined]
        result = await run_tool(self.dcmtk, "storescu", ["-aec", "NEUROLABEL", "127.0.0.1", str(port),
                                                         *map(str, files)])
        assert result.returncode == 0, result.output
        return uid

    async def send_report(self, control_id: str, accession: str, text: str, status: str = "F") -> None:
        """mllp_send one ORU^R01 and require an AA."""
        message = oru(control_id, accession=accession, status=status, lines=text.split("\n"),
                      patient=f"PID|1||{PATIENT_ID}^^^HOSP^MR||DOE^JANE^Q||19700101|F")
        path = self.tmp_path / f"{control_id}.hl7"
        path.write_bytes(MLLP_START + message.encode() + MLLP_STOP)
        port = self.daemon.component("hl7").port  # type: ignore[attr-defined]
        process = await asyncio.create_subprocess_exec(
            str(MLLP_SEND), "-p", str(port), "--file", str(path), "127.0.0.1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0 and "MSA|AA" in output.decode("latin-1"), output

    def current(self, uid: str) -> sa.Row | None:
        with self.database.connect() as connection:
            return connection.execute(
                sa.select(study_labels).where(
                    study_labels.c.study_instance_uid == uid, study_labels.c.current.is_(True)
                )
            ).first()

    def history(self, uid: str) -> list[sa.Row]:
        with self.database.connect() as connection:
            return connection.execute(
                sa.select(study_labels).where(study_labels.c.study_instance_uid == uid).order_by(study_labels.c.id)
            ).all()

    def report_text(self, accession: str) -> str:
        with self.database.connect() as connection:
            return connection.execute(
                sa.select(reports.c.text).where(reports.c.accession_number == accession).order_by(reports.c.id.desc())
            ).scalars().first()

    def writebacks_done(self, label_id: int) -> bool:
        with self.database.connect() as connection:
            rows = connection.execute(
                sa.select(jobs.c.state).where(jobs.c.kind == "writeback", jobs.c.key.like(f"%:labels:{label_id}%"))
            ).scalars().all()
        return bool(rows) and all(state == "done" for state in rows)

    def stored_files(self, uid: str) -> list[Path]:
        with self.database.connect() as connection:
            paths = connection.execute(
                sa.select(instances.c.path).where(
                    instances.c.study_instance_uid == uid, instances.c.generated.is_(False)
                )
            ).scalars().all()
        return [self.daemon.services.config.storage.path / path for path in paths]

    def failed_jobs(self) -> list[sa.Row]:
        with self.database.connect() as connection:
            return connection.execute(sa.select(jobs).where(jobs.c.state == "failed")).all()


MLLP_START = b"\x0b"
MLLP_STOP = b"\x1c\r"


def write_study(folder: Path, study_uid: str, accession: str, count: int, first_number: int = 1) -> list[Path]:
    """MR instances made of pydicom's MR_small with fresh UIDs, our study, accession and patient."""
    folder.mkdir(parents=True, exist_ok=True)
    template = pydicom.dcmread(pydicom_file("MR_small.dcm"))
    series_uid = generate_uid()
    files = []
    for number in range(first_number, first_number + count):
        dataset = template.copy()
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.SOPInstanceUID = generate_uid()
        dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
        dataset.AccessionNumber = accession
        dataset.PatientID = PATIENT_ID
        dataset.StudyDate = dt.date.today().strftime("%Y%m%d")
        dataset.Modality = "MR"
        dataset.InstanceNumber = number
        path = folder / f"{number:04d}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


PipelineFactory = Callable[..., Any]


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[PipelineFactory]:
    """`await pipeline(extra_toml)` starts the whole daemon (HL7, DICOM, Triton, workers, write-back)."""
    missing = triton_missing()
    if missing:
        pytest.skip(missing)
    dcmtk = find_dcmtk()
    if dcmtk is None:
        pytest.skip("DCMTK (Debian package dcmtk) is not installed")
    started: list[Daemon] = []

    async def start(extra_toml: str = "") -> Pipeline:
        config = make_test_config(
            tmp_path,
            "[hl7]\nenabled = true\n[dicom]\nenabled = true\nstable_after_seconds = 0.5\n"
            "[triton]\nenabled = true\nhttp_port = 0\ngrpc_port = 0\nmetrics_port = 0\n" + extra_toml,
        )
        daemon = await start_daemon(config)
        started.append(daemon)
        return Pipeline(daemon, dcmtk, tmp_path)

    try:
        yield start
    finally:
        for daemon in started:
            await stop_daemon(daemon, drain_seconds=10)


def model_says(text: str) -> dict[str, int]:
    (prediction,) = LocalClassifier(MODEL_DIR.parent, MODEL_DIR.name).classify_sync([text])
    return prediction.labels


async def labelled(p: Pipeline, uid: str, timeout: float = 60.0) -> sa.Row:
    return await wait_for(lambda: p.current(uid), timeout=timeout, what=f"labels of study {uid}")


async def test_images_first_then_report(pipeline: PipelineFactory) -> None:
    p = await pipeline()
    uid = await p.send_study("E2E-A1")
    await p.send_report("E2EA1", "E2E-A1", STROKE)
    row = await labelled(p, uid)
    assert row.accession_number == "E2E-A1"
    assert row.labels == model_says(p.report_text("E2E-A1"))
    assert row.model.startswith("neurolabel_report:")
    await wait_for(lambda: p.writebacks_done(row.id), timeout=60, what="write-back done")
    assert all(carries(path, row) for path in p.stored_files(uid))


async def test_instances_arriving_after_the_labels_are_tagged_too(pipeline: PipelineFactory) -> None:
    p = await pipeline()
    uid = await p.send_study("E2E-G1", instances_count=2)
    await p.send_report("E2EG1", "E2E-G1", MASS)
    row = await labelled(p, uid)
    await wait_for(lambda: p.writebacks_done(row.id), timeout=60, what="first write-back")
    await p.send_study("E2E-G1", instances_count=2, study_uid=uid, first_number=3)
    await wait_for(lambda: len(p.stored_files(uid)) == 4 and all(carries(path, row) for path in p.stored_files(uid)),
                   timeout=60, what="the late instances tagged")
    assert [r.id for r in p.history(uid)] == [row.id]  # the same labels, written again


def carries(path: Path, row: sa.Row) -> bool:
    record = read_label_tags(pydicom.dcmread(path))
    return record is not None and dict(record.labels) == row.labels


async def test_report_first_then_images(pipeline: PipelineFactory) -> None:
    p = await pipeline()
    await p.send_report("E2EB1", "E2E-B1", MASS)
    await wait_for(lambda: parked(p, "E2E-B1"), timeout=60, what="report parked")
    uid = await p.send_study("E2E-B1", instances_count=2)
    row = await labelled(p, uid)
    assert row.labels == model_says(p.report_text("E2E-B1"))


async def test_a_correction_supersedes_the_labels(pipeline: PipelineFactory) -> None:
    p = await pipeline()
    uid = await p.send_study("E2E-C1")
    await p.send_report("E2EC1", "E2E-C1", NORMAL)
    first = await labelled(p, uid)
    await p.send_report("E2EC2", "E2E-C1", STROKE, status="C")
    await wait_for(lambda: p.current(uid) is not None and p.current(uid).id != first.id, timeout=60,
                   what="labels of the correction")
    old, new = p.history(uid)
    assert (old.current, old.superseded_reason) == (False, "superseded")
    assert new.report_id != old.report_id and new.labels == model_says(STROKE)


async def test_a_cancellation_withdraws_the_labels(pipeline: PipelineFactory) -> None:
    p = await pipeline()
    uid = await p.send_study("E2E-D1")
    await p.send_report("E2ED1", "E2E-D1", MASS)
    row = await labelled(p, uid)
    await p.send_report("E2ED2", "E2E-D1", "Examination cancelled.", status="X")
    await wait_for(lambda: p.current(uid) is None, timeout=60, what="labels withdrawn")
    (withdrawn,) = p.history(uid)
    assert (withdrawn.id, withdrawn.superseded_reason) == (row.id, "withdrawn")


async def test_a_report_that_never_finds_its_study_is_reported_unmatched(pipeline: PipelineFactory) -> None:
    p = await pipeline("[linking]\nunmatched_after_hours = 0.0005\nrecheck_interval_seconds = 0.5\n")
    await p.send_study("E2E-OTHER")
    await p.send_report("E2EE1", "E2E-NEVER", NORMAL)
    await wait_for(lambda: link_state(p, "E2E-NEVER") == "unmatched", timeout=60, what="report unmatched")
    with p.database.connect() as connection:
        kinds = connection.execute(sa.select(audit_events.c.kind)).scalars().all()
    assert "linking.report_unmatched" in kinds


async def test_triton_killed_and_restarted_in_the_middle(pipeline: PipelineFactory) -> None:
    p = await pipeline()
    triton = p.daemon.component("triton")
    assert isinstance(triton, TritonComponent) and triton.bundled is not None and triton.bundled.pid
    first = await p.send_study("E2E-F1")
    await p.send_report("E2EF1", "E2E-F1", NORMAL)
    await labelled(p, first)
    os.kill(triton.bundled.pid, signal.SIGKILL)
    await wait_for(lambda: not triton.bundled.is_ready(), what="Triton down")
    second = await p.send_study("E2E-F2")
    await p.send_report("E2EF2", "E2E-F2", STROKE)
    row = await labelled(p, second, timeout=120)
    assert triton.bundled.restarts == 1
    assert row.labels == model_says(p.report_text("E2E-F2"))
    assert [job for job in p.failed_jobs() if job.kind in ("classify", "link", "study_stable")] == []


def link_state(p: Pipeline, accession: str) -> str | None:
    with p.database.connect() as connection:
        return connection.execute(
            sa.select(report_link_states.c.state)
            .join(reports, reports.c.id == report_link_states.c.report_id)
            .where(reports.c.accession_number == accession)
        ).scalar()


def parked(p: Pipeline, accession: str) -> bool:
    return link_state(p, accession) == "parked"
