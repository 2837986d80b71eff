"""`neurolabel export` (csv, jsonl, parquet; current or full history) and `neurolabel relabel`."""

from __future__ import annotations

import csv
import datetime as dt
import json
import socket
from pathlib import Path

import pytest

from daemon.app import Services
from daemon.cli import main
from daemon.labels import LABEL_KEYS
from daemon.store.schema import reports
from daemon.work.export import export, flat_columns
from daemon.work.link_jobs import LINK, run_link_job
from daemon.work.relabel import Selection, relabel
from tests.work.rows import add_prediction, add_report, add_study, claim_one, job_rows, label_rows, labels_of
from tests.work.test_classify import FakeClassifier

UID_A = "1.2.3.1"
UID_B = "1.2.3.2"


def labelled(services: Services, uid: str, accession: str, **positive: int) -> int:
    add_study(services.database, uid, accession=accession)
    report_id = add_report(services.database, accession=accession, text="mass" if positive.get("mass") else "normal")
    add_prediction(services.database, report_id, labels_of(**positive))
    job = claim_one(services.database, LINK, f"report:{report_id}", {"report_id": report_id})
    run_link_job(services.database, services.config.linking, job)
    return report_id


@pytest.fixture
def two_studies(services: Services) -> Services:
    """Study A labelled twice (a correction: one superseded row), study B once."""
    first = labelled(services, UID_A, "ACC-A")
    correction = add_report(services.database, accession="ACC-A", supersedes_id=first)
    with services.database.begin() as connection:
        connection.execute(reports.update().where(reports.c.id == first).values(state="superseded"))
    add_prediction(services.database, correction, labels_of(vascular=1))
    run_link_job(services.database, services.config.linking,
                 claim_one(services.database, LINK, f"report:{correction}", {"report_id": correction}))
    labelled(services, UID_B, "ACC-B", mass=1)
    return services


def test_jsonl_has_one_row_per_labelled_study(two_studies: Services, tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    assert export(two_studies.database, "jsonl", out) == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["study_instance_uid"] for row in rows] == [UID_A, UID_B]
    assert set(rows[0]) == {"study_instance_uid", "accession_number", "labels", "probabilities", "model",
                            "report_id", "labelled_at"}
    assert rows[0]["labels"] == labels_of(vascular=1)
    assert list(rows[0]["labels"]) == list(LABEL_KEYS)
    assert rows[1]["probabilities"]["mass"] == 0.9
    assert rows[1]["accession_number"] == "ACC-B"
    assert dt.datetime.fromisoformat(rows[0]["labelled_at"]).tzinfo is not None


def test_csv_is_flattened_and_all_history_keeps_superseded_rows(two_studies: Services, tmp_path: Path) -> None:
    out = tmp_path / "labels.csv"
    assert export(two_studies.database, "csv", out, all_history=True) == 3
    with out.open(newline="") as stream:
        reader = csv.DictReader(stream)
        assert reader.fieldnames == flat_columns(True)
        rows = list(reader)
    assert [(r["study_instance_uid"], r["current"], r["superseded_reason"]) for r in rows] == [
        (UID_A, "false", "superseded"), (UID_A, "true", ""), (UID_B, "true", ""),
    ]
    assert rows[1]["label_vascular"] == "1" and rows[1]["label_abnormal"] == "1" and rows[1]["label_mass"] == "0"
    assert float(rows[2]["prob_mass"]) == 0.9
    assert "labels" not in rows[0]


def test_parquet_has_typed_flat_columns(two_studies: Services, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow (the 'export' extra) is not installed")
    out = tmp_path / "labels.parquet"
    assert export(two_studies.database, "parquet", out) == 2
    table = pq.read_table(out)
    assert table.column_names == flat_columns(False)
    assert table.column("study_instance_uid").to_pylist() == [UID_A, UID_B]
    assert table.column("label_mass").to_pylist() == [0, 1]
    assert str(table.schema.field("labelled_at").type) == "timestamp[us, tz=UTC]"


def test_an_empty_index_exports_a_header_only(services: Services, tmp_path: Path) -> None:
    out = tmp_path / "empty.csv"
    assert export(services.database, "csv", out) == 0
    assert out.read_text().splitlines() == [",".join(flat_columns(False))]


def test_the_cli_writes_to_stdout_and_checks_its_arguments(
    two_studies: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, two_studies)
    assert main(["export", "--format", "jsonl", "--config", str(config)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["export", "--format", "csv", "-o", str(tmp_path / "x.csv"), "--config", str(config)]) == 0
    assert "2 labelled studies written" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--format", "xlsx", "--config", str(config)])
    assert exit_info.value.code == 2


async def test_relabel_writes_new_rows_and_keeps_the_old_ones(two_studies: Services) -> None:
    classifier = FakeClassifier()
    summary, queued = await relabel(two_studies.database, classifier, Selection())
    assert (summary.model, summary.selected, summary.classified, summary.unchanged) == ("fake:3", 2, 2, 0)
    assert summary.labels_written == 2 == len(queued)
    rows = label_rows(two_studies.database)
    assert [(r.study_instance_uid, r.current, r.superseded_reason, r.model) for r in rows] == [
        (UID_A, False, "superseded", "neurolabel_report:1"),
        (UID_A, False, "relabelled", "neurolabel_report:1"),
        (UID_B, False, "relabelled", "neurolabel_report:1"),
        (UID_A, True, None, "fake:3"),
        (UID_B, True, None, "fake:3"),
    ]
    writebacks = [job.payload["study_label_id"] for job in job_rows(two_studies.database, "writeback")]
    assert set(q.study_label_id for q in queued) <= set(writebacks)

    again, _ = await relabel(two_studies.database, classifier, Selection())
    assert (again.classified, again.unchanged, again.labels_written) == (0, 2, 0)


async def test_relabel_selects_by_accession_and_date(two_studies: Services) -> None:
    summary, _ = await relabel(two_studies.database, FakeClassifier(), Selection(accessions=("ACC-B",)))
    assert (summary.selected, summary.classified) == (1, 1)
    future = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    summary, _ = await relabel(two_studies.database, FakeClassifier(), Selection(since=future))
    assert summary.selected == 0


def test_relabel_without_triton_fails_with_a_message(
    services: Services, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, services, extra=f'[triton]\nurl = "127.0.0.1:{unused_port()}"\n')
    assert main(["relabel", "--config", str(config)]) == 1
    assert "is not serving model 'neurolabel_report'" in capsys.readouterr().err
    assert main(["relabel", "--since", "yesterday", "--config", str(config)]) == 2


def write_config(tmp_path: Path, services: Services, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "var"}"\n[database]\nurl = "{services.config.database.url}"\n{extra}'
    )
    return path


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
