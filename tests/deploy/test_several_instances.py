"""Three `neurolabel run` processes against one PostgreSQL and one Triton share the work.

Studies arrive over DICOM at one instance and their reports over HL7 at another; every instance
classifies, links and writes back. Then one instance is killed (SIGKILL) while it holds leased jobs:
the others take them over once the lease has passed. Throughout, every report is classified once,
every study gets one set of labels, one write-back and one SR, and no job fails.
"""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage

from daemon.dicom.private_tags import read_label_tags
from daemon.store.database import Database, open_database
from daemon.store.schema import instances, jobs, predictions, reports, study_labels, writebacks
from tests.hl7.messages import oru
from tests.hl7.wire import MllpClient, msa
from tests.peers.triton import require_tritonserver, running_triton
from tests.reliability.daemon_process import DaemonProcess
from tests.work.conftest import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.triton, pytest.mark.slow]

NAMES = ("nl-a", "nl-b", "nl-c")
LEASE_SECONDS = 3.0
INSTANCES_PER_STUDY = 2
MASS = "Large mass in the left frontal lobe."
NORMAL = "Normal study."


@dataclass(frozen=True)
class Case:
    accession: str
    study_uid: str
    text: str
    study_to: str  # instance receiving the DICOM study
    report_to: str  # instance receiving the HL7 report

    @property
    def expected(self) -> dict[str, int]:
        mass = int("mass" in self.text)
        return {"abnormal": mass, "mass": mass}


@dataclass
class Cluster:
    daemons: dict[str, DaemonProcess]
    database: Database
    folder: Path

    async def send(self, case: Case, report_first: bool) -> None:
        steps = [self._send_report(case), self._send_study(case)]
        for step in steps if report_first else reversed(steps):
            await step

    async def _send_study(self, case: Case) -> None:
        await asyncio.to_thread(_c_store, self.daemons[case.study_to].dicom_port, _study(case))

    async def _send_report(self, case: Case) -> None:
        client = await MllpClient.connect(self.daemons[case.report_to].hl7_port)
        try:
            ack = await client.exchange(oru(f"MSG-{case.accession}", accession=case.accession, lines=[case.text]))
        finally:
            await client.close()
        assert msa(ack)[0] == "AA", ack

    def labelled_and_written_back(self, cases: list[Case]) -> bool:
        with self.database.connect() as connection:
            done = connection.execute(
                sa.select(sa.func.count(sa.distinct(study_labels.c.study_instance_uid)))
                .select_from(study_labels.join(writebacks, writebacks.c.study_label_id == study_labels.c.id))
                .where(
                    study_labels.c.current.is_(True),
                    study_labels.c.study_instance_uid.in_([case.study_uid for case in cases]),
                )
            ).scalar()
        return done == len(cases)

    def running_jobs_of(self, name: str) -> list[sa.Row]:
        with self.database.connect() as connection:
            return connection.execute(
                sa.select(jobs.c.id, jobs.c.kind, jobs.c.key).where(
                    jobs.c.state == "running", jobs.c.claimed_by == name
                )
            ).all()


def _study(case: Case) -> list[Dataset]:
    """pydicom's MR_small as a study of INSTANCES_PER_STUDY instances with the case's UIDs and accession."""
    template = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    series_uid = generate_uid()
    datasets = []
    for number in range(1, INSTANCES_PER_STUDY + 1):
        dataset = copy.deepcopy(template)  # Dataset.copy() shares the elements
        dataset.StudyInstanceUID, dataset.SeriesInstanceUID = case.study_uid, series_uid
        dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        dataset.AccessionNumber, dataset.PatientID, dataset.InstanceNumber = case.accession, "MRN12345", number
        datasets.append(dataset)
    return datasets


def _c_store(port: int, datasets: list[Dataset]) -> None:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(MRImageStorage)
    association = ae.associate("127.0.0.1", port, ae_title="NEUROLABEL")
    assert association.is_established
    try:
        for dataset in datasets:
            status = association.send_c_store(dataset)
            assert status and status.Status == 0x0000, status
    finally:
        association.release()


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str) -> Iterator[Cluster]:
    require_tritonserver()
    with running_triton(tmp_path / "triton") as triton:
        daemons = {
            name: DaemonProcess(
                tmp_path / name,
                triton.grpc_url,
                extra={
                    "daemon": {"instance_name": name},
                    "database": {"url": postgres_url, "auto_migrate": True},
                    # The received studies are shared: any instance may write labels back into them.
                    "storage": {"path": str(tmp_path / "shared-dicom")},
                    "dicom": {"stable_after_seconds": 0.5},
                    "triton": {"model": "fake_report"},
                    "workers": {"lease_seconds": LEASE_SECONDS, "classify_batch_size": 4},
                },
            )
            for name in NAMES
        }
        database = open_database(postgres_url)
        try:
            # Started together: they race to migrate the empty database (one does, the others wait).
            errors: list[BaseException] = []
            threads = [threading.Thread(target=_start, args=(daemon, errors)) for daemon in daemons.values()]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert not errors, errors
            yield Cluster(daemons, database, tmp_path)
        finally:
            for daemon in daemons.values():
                daemon.close()
            database.dispose()


def _start(daemon: DaemonProcess, errors: list[BaseException]) -> None:
    try:
        daemon.start(timeout=120)
    except BaseException as exc:  # noqa: BLE001 - reported by the fixture
        errors.append(exc)


def _cases(prefix: str, count: int, study_to: list[str], report_to: list[str], slow: bool = False) -> list[Case]:
    return [
        Case(
            accession=f"{prefix}{n}",
            study_uid=generate_uid(),
            text=("[slow] " if slow else "") + (MASS if n % 2 == 0 else NORMAL),
            study_to=study_to[n % len(study_to)],
            report_to=report_to[n % len(report_to)],
        )
        for n in range(count)
    ]


def assert_each_done_once(cluster: Cluster, cases: list[Case]) -> None:
    uids = [case.study_uid for case in cases]
    of_studies = study_labels.c.study_instance_uid.in_(uids)
    with cluster.database.connect() as connection:

        def count(
            column: sa.ColumnElement, *where: sa.ColumnElement[bool], join: sa.FromClause | None = None
        ) -> Counter:
            statement = sa.select(column).where(*where)
            return Counter(connection.execute(statement.select_from(join) if join is not None else statement).scalars())

        accessions = [case.accession for case in cases]
        classified = count(
            reports.c.accession_number,
            reports.c.accession_number.in_(accessions),
            join=reports.join(predictions, predictions.c.report_id == reports.c.id),
        )
        labelled = count(study_labels.c.study_instance_uid, of_studies)
        # A write-back may run again (the study became stable again); it then finds the files tagged already.
        written = Counter()
        for uid, tagged in connection.execute(
            sa.select(writebacks.c.study_instance_uid, writebacks.c.instances_tagged).where(
                writebacks.c.study_instance_uid.in_(uids), writebacks.c.action == "labels"
            )
        ):
            written[uid] += tagged
        srs = count(instances.c.study_instance_uid, instances.c.study_instance_uid.in_(uids), instances.c.generated)
        current = {
            row.study_instance_uid: row.labels
            for row in connection.execute(sa.select(study_labels).where(of_studies, study_labels.c.current.is_(True)))
        }
        failed = connection.execute(sa.select(jobs.c.kind, jobs.c.key).where(jobs.c.state == "failed"))
        files = connection.execute(
            sa.select(instances.c.study_instance_uid, instances.c.path).where(
                instances.c.study_instance_uid.in_(uids), instances.c.generated.is_(False)
            )
        ).all()
        assert failed.all() == []
    assert classified == {case.accession: 1 for case in cases}, "each report classified once"
    assert labelled == {uid: 1 for uid in uids}, "each study labelled once"
    assert written == {uid: INSTANCES_PER_STUDY for uid in uids}, "each file tagged once"
    assert srs == {uid: 1 for uid in uids}, "one SR per study"
    for case in cases:
        assert {key: current[case.study_uid][key] for key in case.expected} == case.expected
    storage = cluster.daemons[NAMES[0]].config.storage.path
    assert len(files) == INSTANCES_PER_STUDY * len(cases)
    for uid, path in files:
        record = read_label_tags(pydicom.dcmread(storage / path))
        assert record is not None and dict(record.labels) == current[uid]


async def test_three_instances_share_the_work_and_survive_one_killed(cluster: Cluster) -> None:
    a, b, c = NAMES
    # 1. Every instance receives, every instance works.
    shared = _cases("SHARE-", 9, study_to=[a, b, c], report_to=[b, c, a])
    for n, case in enumerate(shared):
        await cluster.send(case, report_first=n % 3 == 0)
    await wait_for(lambda: cluster.labelled_and_written_back(shared), timeout=120, what="labelled, written back")
    assert_each_done_once(cluster, shared)
    with cluster.database.connect() as connection:
        workers = Counter(connection.execute(sa.select(jobs.c.claimed_by).where(jobs.c.state == "done")).scalars())
    assert len([name for name in NAMES if workers[name]]) >= 2, f"the work was not shared: {workers}"

    # 2. One instance dies holding leased work; the others finish it.
    victim = cluster.daemons[c]
    failover = _cases("FAILOVER-", 6, study_to=[a, b], report_to=[c, a, c], slow=True)
    for case in failover:
        await cluster.send(case, report_first=False)
    held = await _freeze_while_holding_jobs(cluster, victim)
    victim.kill()
    killed_at = time.monotonic()
    await wait_for(
        lambda: cluster.labelled_and_written_back(shared + failover), timeout=120, what="the victim's work, elsewhere"
    )
    taken_over_after = time.monotonic() - killed_at
    assert_each_done_once(cluster, shared + failover)
    with cluster.database.connect() as connection:
        rows = connection.execute(sa.select(jobs).where(jobs.c.id.in_([job.id for job in held]))).all()
    for row in rows:
        assert row.state == "done" and row.claimed_by in (a, b) and row.attempts >= 2, row
    logs = cluster.daemons[a].log_text() + cluster.daemons[b].log_text()
    assert "lease expired" in logs
    assert taken_over_after >= LEASE_SECONDS * 0.5  # not before the lease could have passed


async def _freeze_while_holding_jobs(cluster: Cluster, victim: DaemonProcess, timeout: float = 60.0) -> list[sa.Row]:
    """SIGSTOP the victim at a moment it holds running jobs; returns them (it is left stopped)."""
    name = victim.config.daemon.instance_name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(cluster.running_jobs_of, name):
            os.kill(victim.pid, signal.SIGSTOP)
            held = await asyncio.to_thread(cluster.running_jobs_of, name)
            if held:
                return held
            os.kill(victim.pid, signal.SIGCONT)
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} never held a job")
