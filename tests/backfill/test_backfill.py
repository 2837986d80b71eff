"""`neurolabel backfill` through a real tritonserver (the fixture model fake_report, cheap and deterministic):
the three formats, linking to indexed studies, idempotence, interruption (Ctrl-C and kill -9) and resume,
and bad files named by line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from daemon.backfill.run import BackfillCounts, run_backfill
from daemon.cli import main
from daemon.config import Config
from daemon.store.database import Database, open_database
from daemon.store.migrate import upgrade_to_head
from daemon.store.schema import audit_events, jobs, predictions, reports, study_labels
from tests.conftest import REPO_ROOT, make_test_config
from tests.hl7.messages import oru
from tests.peers.triton import FIXTURE_REPOSITORY, TritonPeer, require_tritonserver, running_triton
from tests.work.rows import add_report, add_study

pytestmark = [pytest.mark.triton]

NEUROLABEL = [sys.executable, "-m", "daemon.cli"]


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonPeer]:
    require_tritonserver()
    with running_triton(tmp_path_factory.mktemp("triton")) as peer:
        yield peer


def backfill_config(tmp_path: Path, triton_url: str = "") -> Config:
    url = f'url = "{triton_url}"\n' if triton_url else "http_port = 0\ngrpc_port = 0\nmetrics_port = 0\n"
    return make_test_config(
        tmp_path, f'[triton]\nmodel = "fake_report"\nmodel_repository = "{FIXTURE_REPOSITORY}"\n{url}'
    )


def write_config(config: Config, tmp_path: Path) -> Path:
    """The same configuration as a file, for the command in a subprocess."""
    path = tmp_path / "config.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{config.daemon.state_dir}"\n'
        f'[database]\nurl = "{config.database.url}"\n'
        f'[triton]\nurl = "{config.triton.url}"\nmodel = "fake_report"\nmodel_repository = "{FIXTURE_REPOSITORY}"\n'
        f'[audit]\nreport_dir = "{config.audit.report_dir}"\nlog_file = "{config.audit.log_file}"\n'
    )
    return path


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    config = make_test_config(tmp_path)
    config.daemon.state_dir.mkdir(parents=True, exist_ok=True)
    opened = open_database(config.database.url)
    upgrade_to_head(opened)
    yield opened
    opened.dispose()


def write_jsonl(path: Path, items: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path


def rows(database: Database, table: sa.Table) -> list[sa.Row]:
    with database.connect() as connection:
        return connection.execute(sa.select(table).order_by(table.c.id)).all()


def backfilled(database: Database) -> list[sa.Row]:
    return [row for row in rows(database, reports) if row.source == "backfill"]


# --- JSONL, linking, idempotence ---------------------------------------------------------------


def test_jsonl_reports_are_classified_and_linked_to_indexed_studies(
    tmp_path: Path, database: Database, triton: TritonPeer
) -> None:
    config = backfill_config(tmp_path, triton.grpc_url)
    add_study(database, "1.2.826.0.1.1", accession="BF-A1")
    add_report(database, accession="BF-LIVE")  # reported over HL7 already
    source = write_jsonl(tmp_path / "historic.jsonl", [
        {"id": "h1", "text": "Large mass in the left frontal lobe.", "accession_number": "BF-A1",
         "labels": {"mass": 1}},
        {"id": "h2", "text": "Normal study.", "accession_number": "BF-NOSTUDY", "patient_id": "P9",
         "study_date": "2019-04-02"},
        {"id": "h3", "text": "Atrophy.", "accession_number": "BF-LIVE"},
    ])
    counts = run_backfill(config, database, source)
    assert (counts.total, counts.read, counts.classified, counts.linked, counts.unmatched) == (3, 3, 2, 1, 1)
    assert (counts.already_reported, counts.done_before, counts.failed, counts.writebacks_queued) == (1, 0, 0, 1)
    assert counts.model == "fake_report:1" and counts.throughput > 0
    stored = {row.external_id: row for row in backfilled(database)}
    assert set(stored) == {"h1", "h2"}
    assert stored["h2"].patient_id == "P9" and stored["h2"].observation_time.date().isoformat() == "2019-04-02"
    (label,) = rows(database, study_labels)
    assert (label.study_instance_uid, label.report_id, label.labels["mass"]) == ("1.2.826.0.1.1", stored["h1"].id, 1)
    (writeback,) = [job for job in rows(database, jobs) if job.kind == "writeback"]
    assert writeback.state == "pending" and writeback.payload["study_label_id"] == label.id
    kinds = [row.kind for row in rows(database, audit_events)]
    for kind in ("backfill.started", "report.stored", "report.classified", "linking.linked", "labels.written",
                 "backfill.finished"):
        assert kind in kinds, kind


def test_a_second_run_skips_everything_and_writes_nothing(
    tmp_path: Path, database: Database, triton: TritonPeer
) -> None:
    config = backfill_config(tmp_path, triton.grpc_url)
    source = write_jsonl(tmp_path / "r.jsonl", [{"id": f"r{i}", "text": f"report {i}"} for i in range(40)])
    first = run_backfill(config, database, source, batch_size=8)
    before = (len(rows(database, reports)), len(rows(database, predictions)))
    second = run_backfill(config, database, source, batch_size=8)
    assert (first.classified, second.classified, second.done_before) == (40, 0, 40)
    assert (len(rows(database, reports)), len(rows(database, predictions))) == before == (40, 40)


def test_a_later_report_of_an_accession_supersedes_the_earlier(
    tmp_path: Path, database: Database, triton: TritonPeer
) -> None:
    config = backfill_config(tmp_path, triton.grpc_url)
    add_study(database, "1.2.826.0.1.2", accession="BF-C1")
    source = write_jsonl(tmp_path / "c.jsonl", [
        {"id": "first", "text": "Normal.", "accession_number": "BF-C1"},
        {"id": "addendum", "text": "Addendum: small mass.", "accession_number": "BF-C1"},
    ])
    run_backfill(config, database, source, batch_size=1)
    first, addendum = backfilled(database)
    assert (first.state, addendum.state, addendum.supersedes_id) == ("superseded", "active", first.id)
    current = [row for row in rows(database, study_labels) if row.current]
    assert [(row.report_id, row.labels["mass"]) for row in current] == [(addendum.id, 1)]


# --- CSV and HL7 -------------------------------------------------------------------------------------


def test_csv_through_the_bundled_server(tmp_path: Path, database: Database) -> None:
    require_tritonserver()
    config = backfill_config(tmp_path)  # [triton] url empty: the bundled server is started for the command
    source = tmp_path / "historic.csv"
    source.write_text(
        "id,text,accession_number,study_date,extra\n"
        'c1,"Findings: vascular malformation.\nImpression: AVM.",BF-CSV1,20200101,ignored\n'
        "c2,Normal appearances.,,,\n",
        encoding="utf-8",
    )
    counts = run_backfill(config, database, source)
    assert (counts.classified, counts.unmatched) == (2, 2)
    first, second = backfilled(database)
    assert (first.external_id, first.accession_number, first.text) == (
        "c1", "BF-CSV1", "Findings: vascular malformation.\nImpression: AVM.")
    assert (second.external_id, second.accession_number) == ("c2", None)
    vascular = [row.labels["vascular"] for row in rows(database, predictions)]
    assert vascular == [1, 0]


def test_hl7_file_framed_and_loose(tmp_path: Path, database: Database, triton: TritonPeer) -> None:
    config = backfill_config(tmp_path, triton.grpc_url)
    add_study(database, "1.2.826.0.1.3", accession="BF-H1", patient_id="MRN12345")
    framed = b"\x0b" + oru("HB1", accession="BF-H1", lines=["Mass effect."]).encode() + b"\x1c\r"
    loose = oru("HB2", accession="BF-H2", separator="\n").encode()
    cancelled = oru("HB3", accession="BF-H3", status="X").encode()
    source = tmp_path / "archive.hl7"
    source.write_bytes(b"FHS|^~\\&|RIS\r" + framed + b"\n" + loose + cancelled + b"FTS|3\r")
    counts = run_backfill(config, database, source)
    assert (counts.total, counts.classified, counts.linked, counts.not_reports) == (3, 2, 1, 1)
    h1, h2 = backfilled(database)
    assert (h1.external_id, h1.accession_number, h1.patient_id, h1.text) == ("HB1", "BF-H1", "MRN12345", "Mass effect.")
    assert h2.external_id == "HB2" and h2.patient_name  # parsed as the listener parses it
    assert [row.report_id for row in rows(database, study_labels)] == [h1.id]


# --- bad files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.jsonl", '{"id": "a", "text": "x"}\n\n{"id": "b", "text": \n', "bad.jsonl:3: not JSON"),
        ("notext.jsonl", '{"id": "a", "text": "x"}\n{"id": "b"}\n', "notext.jsonl:2: 'text' must be a string"),
        ("twice.jsonl", '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "twice.jsonl:2: id 'a' already used"),
        ("date.jsonl", '{"id": "a", "text": "x", "study_date": "April"}\n', "date.jsonl:1: 'study_date'"),
        ("columns.csv", "id,body\n1,x\n", "columns.csv:1: the header row needs the columns id and text"),
        ("wide.csv", "id,text\n1,x\n2,y,z\n", "wide.csv:3: more fields"),
        ("junk.hl7", "MSH|^~\\&|RIS|H|NL|NL|20240101||ORU^R01|M1|P|2.5\rPID|1||X\n\x00junk", "junk.hl7:"),
        ("noheader.hl7", "hello\nMSH|^~\\&|RIS\r", "noheader.hl7:1: expected an MSH segment"),
    ],
)
def test_a_bad_file_is_a_usage_error_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str, expected: str
) -> None:
    config_path = write_config(make_test_config(tmp_path), tmp_path)
    (tmp_path / name).write_text(content, encoding="utf-8")
    code = main(["backfill", str(tmp_path / name), "--config", str(config_path)])
    error = capsys.readouterr().err
    assert code == 2 and expected in error, error
    assert "Traceback" not in error


def test_an_unknown_extension_needs_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = write_config(make_test_config(tmp_path), tmp_path)
    (tmp_path / "reports.dat").write_text("{}\n")
    assert main(["backfill", str(tmp_path / "reports.dat"), "--config", str(config_path)]) == 2
    assert "--format" in capsys.readouterr().err


# --- interruption and resume --------------------------------------------------------------------------------


SLOW_EVERY = 25


def slow_corpus(path: Path, count: int) -> Path:
    """Reports of which every SLOW_EVERY-th makes the fixture model take a second longer."""
    return write_jsonl(path, [
        {"id": f"s{i:04d}", "text": f"report {i} mass" + (" [slow]" if i % SLOW_EVERY == 0 else "")}
        for i in range(count)
    ])


def start_backfill(config_path: Path, source: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*NEUROLABEL, "backfill", str(source), "--config", str(config_path), "--batch", "25", *extra],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_interrupted_run_resumes_without_duplicates(
    tmp_path: Path, database: Database, triton: TritonPeer, how: signal.Signals
) -> None:
    config = backfill_config(tmp_path, triton.grpc_url)
    config_path = write_config(config, tmp_path)
    total = 250
    source = slow_corpus(tmp_path / "many.jsonl", total)
    process = start_backfill(config_path, source)
    try:
        wait_until(lambda: len(backfilled(database)) >= 50, 120, "the first batches stored")
        os.kill(process.pid, how)
        _, error = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stored_before = len(backfilled(database))
    assert 50 <= stored_before < total
    if how == signal.SIGINT:
        assert process.returncode == 130, error
        assert "run the same command again to resume" in error and f"classified: {stored_before}" in error
        finished = [row for row in rows(database, audit_events) if row.kind == "backfill.finished"]
        assert finished[-1].outcome == "failure" and "interrupted" in finished[-1].detail
    else:
        assert process.returncode == -signal.SIGKILL

    again = start_backfill(config_path, source)
    output, error = again.communicate(timeout=300)
    assert again.returncode == 0, error
    assert f"skipped as done (earlier run): {stored_before}" in output
    assert f"classified: {total - stored_before} " in output
    ids = [row.external_id for row in backfilled(database)]
    assert sorted(ids) == [f"s{i:04d}" for i in range(total)]
    report_ids = [row.report_id for row in rows(database, predictions)]
    assert len(report_ids) == len(set(report_ids)) == total
    assert "throughput:" in output and "backfill" in error  # the progress bar went to stderr


def test_summary_lines_name_every_count() -> None:
    counts = BackfillCounts(total=10, read=10, done_before=1, already_reported=2, not_reports=1, classified=6,
                            linked=4, unmatched=2, failed=0, writebacks_queued=4, seconds=2.0, model="m:1")
    text = "\n".join(counts.lines())
    assert "classified: 6 with m:1" in text and "3.0 reports/s" in text and "unmatched" in text


def test_unreachable_triton_fails_with_exit_1_and_is_audited(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], database: Database
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    config_path = write_config(backfill_config(tmp_path, f"127.0.0.1:{closed}"), tmp_path)
    source = write_jsonl(tmp_path / "r.jsonl", [{"id": "x1", "text": "report"}])
    assert main(["backfill", str(source), "--config", str(config_path)]) == 1
    assert f"127.0.0.1:{closed}" in capsys.readouterr().err
    finished = [row for row in rows(database, audit_events) if row.kind == "backfill.finished"]
    assert [row.outcome for row in finished] == ["failure"] and backfilled(database) == []


class Flaky:
    """The real Triton classifier, refusing its first calls as Triton does while it restarts."""

    def __init__(self, inner: object, refusals: int) -> None:
        self.inner = inner
        self.refusals = refusals
        self.calls = 0

    async def classify(self, texts: list[str]) -> object:
        from daemon.inference.prediction import InferenceUnavailable

        self.calls += 1
        if self.refusals > 0:
            self.refusals -= 1
            raise InferenceUnavailable("Triton restarting")
        return await self.inner.classify(texts)  # type: ignore[attr-defined]

    async def model_info(self) -> object:
        return await self.inner.model_info()  # type: ignore[attr-defined]

    async def is_ready(self) -> bool:
        return True


def test_requests_refused_for_a_while_are_tried_again(tmp_path: Path, database: Database, triton: TritonPeer) -> None:
    import asyncio

    from daemon.backfill.run import PART, Backfill, hl7_settings
    from daemon.backfill.sources import read_records
    from daemon.inference.triton_client import TritonClassifier

    config = backfill_config(tmp_path, triton.grpc_url)
    source = write_jsonl(tmp_path / "r.jsonl", [{"id": f"f{i}", "text": f"report {i}"} for i in range(3 * PART)])

    async def run() -> tuple[BackfillCounts, int]:
        async with TritonClassifier(triton.grpc_url, "fake_report") as classifier:
            flaky = Flaky(classifier, refusals=4)
            backfill = Backfill(
                database, config.linking, flaky, batch_size=2 * PART, pauses=(0.01,) * 5  # type: ignore[arg-type]
            )
            counts = await backfill.run(read_records(source, "jsonl", hl7_settings(config)), 3 * PART)
            return counts, flaky.calls

    counts, calls = asyncio.run(run())
    assert (counts.classified, counts.failed) == (3 * PART, 0)
    assert calls == 3 + 4  # three parts, four refusals tried again
    assert sorted(row.external_id for row in backfilled(database)) == sorted(f"f{i}" for i in range(3 * PART))
