"""The daemon in-process: classify -> link -> sidecar labels through its own workers and scheduler.

With the bundled tritonserver and the shipped model (triton_models/neurolabel_report) when both are
there; the tiny fixture model of tests/fixtures answers another question, so it cannot stand in.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from daemon.app import Daemon, start_daemon, stop_daemon
from daemon.config import Config
from daemon.inference.component import TritonComponent
from daemon.inference.local import LocalClassifier
from daemon.inference.triton_server import TritonNotInstalled, find_installation
from daemon.store import queue
from daemon.store.schema import jobs, predictions, study_labels
from daemon.work.classify import CLASSIFY
from daemon.work.link_jobs import STUDY_STABLE
from daemon.work.runner import JobRunner
from daemon.work.scheduler import LINKING_RECHECK, Scheduler
from tests.conftest import REPO_ROOT, make_test_config
from tests.work.conftest import wait_for
from tests.work.rows import add_report, add_study

MODEL_DIR = REPO_ROOT / "triton_models" / "neurolabel_report"
WITHOUT_WRITEBACK = "[writeback]\nprivate_tags = false\nstructured_report = false\n"

STROKE = ("CLINICAL DETAILS: left sided weakness.\nFINDINGS: Restricted diffusion in the right MCA territory "
          "with corresponding FLAIR signal.\nIMPRESSION: Acute right MCA territory infarct.")
NORMAL = "MRI head. Normal appearances of the brain for age. No acute infarct, mass or haemorrhage."
MS = ("Known MS. Multiple periventricular and juxtacortical T2/FLAIR hyperintense lesions, two enhancing, "
      "in keeping with active demyelination.")


def triton_missing() -> str:
    if not (MODEL_DIR / "config.pbtxt").is_file():
        return f"the shipped model is not in {MODEL_DIR} (train and export it first)"
    try:
        find_installation()
    except TritonNotInstalled as exc:
        return f"tritonserver binary not available: {exc}"
    return ""


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    config = make_test_config(tmp_path, WITHOUT_WRITEBACK)
    running = await start_daemon(config)
    try:
        yield running
    finally:
        await stop_daemon(running, drain_seconds=5)


@pytest.fixture
async def daemon_with_triton(tmp_path: Path) -> AsyncIterator[Daemon]:
    missing = triton_missing()
    if missing:
        pytest.skip(missing)
    config = make_test_config(
        tmp_path,
        "[triton]\nenabled = true\nhttp_port = 0\ngrpc_port = 0\nmetrics_port = 0\n"
        "[workers]\nclassify_batch_size = 16\n" + WITHOUT_WRITEBACK,
    )
    running = await start_daemon(config)
    try:
        yield running
    finally:
        await stop_daemon(running, drain_seconds=10)


def current_labels(config_or_daemon: Daemon) -> dict[str, dict]:
    with config_or_daemon.services.database.connect() as connection:
        rows = connection.execute(sa.select(study_labels).where(study_labels.c.current.is_(True))).all()
    return {row.study_instance_uid: row for row in rows}


def enqueue(daemon: Daemon, kind: str, key: str, payload: dict) -> None:
    with daemon.services.database.begin() as connection:
        queue.enqueue(connection, kind, key, payload)
    daemon.services.work_signal.notify(kind)


def failed_jobs(daemon: Daemon) -> list:
    with daemon.services.database.connect() as connection:
        return connection.execute(sa.select(jobs).where(jobs.c.state == "failed")).all()


async def test_the_daemon_runs_workers_and_scheduler(daemon: Daemon) -> None:
    runner = daemon.component("workers")
    assert isinstance(runner, JobRunner)
    assert set(runner.kinds) >= {"link", "study_stable", "withdraw", "writeback", "forward"}
    assert "classify" not in runner.kinds  # [triton] enabled = false: an intake-only instance
    scheduler = daemon.component("scheduler")
    assert isinstance(scheduler, Scheduler) and LINKING_RECHECK in scheduler.job_ids
    assert daemon.health()["workers"].up and daemon.health()["scheduler"].up
    names = [component.name for component in daemon.components]
    assert names.index("workers") < names.index("scheduler") < names.index("http")

    database = daemon.services.database
    add_study(database, "1.2.3", accession="ACC1")
    enqueue(daemon, STUDY_STABLE, "study:1.2.3:1", {"study_instance_uid": "1.2.3"})
    report_id = add_report(database, accession="ACC1")
    from tests.work.rows import add_prediction

    add_prediction(database, report_id)
    enqueue(daemon, "link", f"report:{report_id}", {"report_id": report_id})
    await wait_for(lambda: "1.2.3" in current_labels(daemon), what="labels of the study")


@pytest.mark.triton
@pytest.mark.slow
async def test_reports_are_classified_by_the_real_model_and_wait_while_triton_is_down(
    daemon_with_triton: Daemon,
) -> None:
    daemon = daemon_with_triton
    database = daemon.services.database
    texts = {"S1": STROKE, "S2": NORMAL, "S3": MS}
    for n, (accession, text) in enumerate(texts.items(), start=1):
        add_study(database, f"1.2.{n}", accession=accession)
        enqueue(daemon, STUDY_STABLE, f"study:1.2.{n}:1", {"study_instance_uid": f"1.2.{n}"})
        report_id = add_report(database, accession=accession, text=text)
        enqueue(daemon, CLASSIFY, f"report:{report_id}", {"report_id": report_id})
    await wait_for(lambda: len(current_labels(daemon)) == 3, timeout=60, what="three studies labelled")
    labels = current_labels(daemon)
    # What the model itself says, in-process: the pipeline stores exactly that, nothing guessed.
    expected = LocalClassifier(MODEL_DIR.parent, MODEL_DIR.name).classify_sync(list(texts.values()))
    for n, want in enumerate(expected, start=1):
        row = labels[f"1.2.{n}"]
        assert row.labels == want.labels and row.model == want.model
        assert row.probabilities == pytest.approx(want.probabilities, abs=1e-3)
    with database.connect() as connection:
        thresholds = connection.execute(sa.select(predictions.c.thresholds)).scalars().first()
    assert set(thresholds) == set(labels["1.2.1"].labels)

    # Triton dies: reports wait (deferred, not failed) until the supervisor has it back.
    triton = daemon.component("triton")
    assert isinstance(triton, TritonComponent) and triton.bundled is not None and triton.bundled.pid
    os.kill(triton.bundled.pid, signal.SIGKILL)
    await wait_for(lambda: not triton.bundled.is_ready(), what="triton down")
    add_study(database, "1.2.9", accession="LATE")
    enqueue(daemon, STUDY_STABLE, "study:1.2.9:1", {"study_instance_uid": "1.2.9"})
    late = add_report(database, accession="LATE", text=STROKE)
    enqueue(daemon, CLASSIFY, f"report:{late}", {"report_id": late})
    await wait_for(lambda: "1.2.9" in current_labels(daemon), timeout=120, what="labelled after Triton's restart")
    assert triton.bundled.restarts == 1
    assert current_labels(daemon)["1.2.9"].labels == expected[0].labels
    assert failed_jobs(daemon) == []
