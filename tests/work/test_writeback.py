"""Write-back of labels into stored DICOM files and the study SR; forwarding to a real Orthanc."""

from __future__ import annotations

import datetime as dt
import io
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import sqlalchemy as sa
from pydicom.data import get_testdata_file

from daemon.app import Services
from daemon.config import AeAddress, Config, parse_ae_address, with_overrides
from daemon.dicom.private_tags import STATUS_WITHDRAWN, read_label_block, read_label_tags
from daemon.dicom.sr import read_label_sr, read_label_sr_state
from daemon.dicom.uids import instance_path
from daemon.labels import LABEL_KEYS
from daemon.store import queue
from daemon.store.database import Database
from daemon.store.schema import (
    audit_events,
    instances,
    jobs,
    predictions,
    reports,
    series,
    studies,
    study_labels,
    writebacks,
)
from daemon.work import writeback as writeback_module
from daemon.work.runner import JobFailed
from daemon.work.writeback import FORWARD, WRITEBACK, forward_study, write_back, writeback_handlers
from tests.peers.orthanc import OrthancServer, orthanc, orthanc_server  # noqa: F401  (fixtures)
from tests.work.conftest import running, wait_for

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
# Different encodings in one study: explicit and implicit VR, RLE, JPEG 2000, JPEG lossless.
SOURCES = (
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "JPEG2000.dcm",
)
NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class StoredStudy:
    study_uid: str
    paths: tuple[Path, ...]
    pixel_data: dict[str, bytes]  # SOP Instance UID -> encapsulated/native pixel bytes as received
    syntaxes: dict[str, str]


def store_study(config: Config, database: Database, sources: Sequence[str] = SOURCES) -> StoredStudy:
    """Files in the storage layout and their index rows, as the DICOM intake leaves them."""
    with database.begin() as connection:
        connection.execute(
            studies.insert().values(
                study_instance_uid=STUDY_UID,
                accession_number="ACC-7",
                patient_id="P1",
                first_received_at=NOW,
                last_received_at=NOW,
                state="stable",
                stable_at=NOW,
                instance_count=0,
                total_bytes=0,
            )
        )
    paths = [store_study_instance(config, database, name, index=index) for index, name in enumerate(sources)]
    datasets = [pydicom.dcmread(path) for path in paths]
    return StoredStudy(
        STUDY_UID,
        tuple(paths),
        {str(d.SOPInstanceUID): bytes(d.PixelData) for d in datasets},
        {str(d.SOPInstanceUID): str(d.file_meta.TransferSyntaxUID) for d in datasets},
    )


def store_study_instance(config: Config, database: Database, name: str, *, index: int) -> Path:
    """One pydicom test file made an instance of the study (series by parity of `index`), stored and indexed."""
    dataset = pydicom.dcmread(get_testdata_file(name))
    series_uid = f"{STUDY_UID}.{index % 2 + 1}"
    sop_uid = f"{STUDY_UID}.{index % 2 + 1}.{index + 1}"
    dataset.StudyInstanceUID = STUDY_UID
    dataset.SeriesInstanceUID = series_uid
    dataset.SOPInstanceUID = sop_uid
    dataset.file_meta.MediaStorageSOPInstanceUID = sop_uid
    dataset.AccessionNumber = "ACC-7"
    dataset.PatientID = "P1"
    relative = instance_path(STUDY_UID, series_uid, sop_uid)
    path = config.storage.path / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path)
    with database.begin() as connection:
        study_id = connection.execute(
            sa.select(studies.c.id).where(studies.c.study_instance_uid == STUDY_UID)
        ).scalar_one()
        series_id = connection.execute(
            sa.select(series.c.id).where(series.c.series_instance_uid == series_uid)
        ).scalar()
        if series_id is None:
            series_id = connection.execute(
                series.insert().values(
                    series_instance_uid=series_uid, study_ref=study_id, modality="MR", instance_count=0, total_bytes=0
                )
            ).inserted_primary_key[0]
        connection.execute(
            instances.insert().values(
                sop_instance_uid=sop_uid,
                sop_class_uid=str(dataset.SOPClassUID),
                series_ref=series_id,
                study_instance_uid=STUDY_UID,
                transfer_syntax_uid=str(dataset.file_meta.TransferSyntaxUID),
                path=str(relative),
                size_bytes=path.stat().st_size,
                received_at=NOW,
                generated=False,
            )
        )
        size = path.stat().st_size
        connection.execute(
            series.update()
            .where(series.c.id == series_id)
            .values(instance_count=series.c.instance_count + 1, total_bytes=series.c.total_bytes + size)
        )
        connection.execute(
            studies.update()
            .where(studies.c.id == study_id)
            .values(instance_count=studies.c.instance_count + 1, total_bytes=studies.c.total_bytes + size)
        )
    return path


def add_labels(database: Database, *, seed: int = 0, supersede: int | None = None) -> int:
    """A report, its prediction and a current study_labels row; `supersede` makes an older row not current."""
    labels = {key: (index + seed) % 2 for index, key in enumerate(LABEL_KEYS)}
    probabilities = {key: 0.9 if labels[key] else 0.1 + index / 100 for index, key in enumerate(LABEL_KEYS)}
    with database.begin() as connection:
        report_id = connection.execute(
            reports.insert().values(source="test", accession_number="ACC-7", text="report", created_at=NOW)
        ).inserted_primary_key[0]
        prediction_id = connection.execute(
            predictions.insert().values(
                report_id=report_id, probabilities=probabilities, labels=labels, model="nl:2", created_at=NOW
            )
        ).inserted_primary_key[0]
        if supersede is not None:
            connection.execute(
                study_labels.update()
                .where(study_labels.c.id == supersede)
                .values(current=False, superseded_at=NOW, superseded_reason="superseded")
            )
        return int(
            connection.execute(
                study_labels.insert().values(
                    study_instance_uid=STUDY_UID,
                    accession_number="ACC-7",
                    report_id=report_id,
                    prediction_id=prediction_id,
                    labels=labels,
                    probabilities=probabilities,
                    model="nl:2",
                    labelled_at=NOW + dt.timedelta(minutes=seed),
                    current=True,
                )
            ).inserted_primary_key[0]
        )


def withdraw(database: Database, label_id: int) -> dt.datetime:
    at = NOW + dt.timedelta(hours=1)
    with database.begin() as connection:
        connection.execute(
            study_labels.update()
            .where(study_labels.c.id == label_id)
            .values(current=False, superseded_at=at, superseded_reason="withdrawn")
        )
    return at


def generated_rows(database: Database) -> list[sa.Row]:
    with database.connect() as connection:
        return list(connection.execute(sa.select(instances).where(instances.c.generated.is_(True))).all())


def writeback_payload(label_id: int) -> dict[str, object]:
    return {"study_instance_uid": STUDY_UID, "study_label_id": label_id}


def assert_totals_match_files(config: Config, database: Database) -> None:
    """The study's and each series' count and bytes agree with the files (the SR included), as the intake keeps them."""
    with database.connect() as connection:
        study = connection.execute(sa.select(studies).where(studies.c.study_instance_uid == STUDY_UID)).one()
        rows = connection.execute(sa.select(instances).where(instances.c.study_instance_uid == STUDY_UID)).all()
        series_rows = connection.execute(sa.select(series).where(series.c.study_ref == study.id)).all()
    on_disk = {row.id: (config.storage.path / row.path).stat().st_size for row in rows}
    assert study.instance_count == len(rows)
    assert study.total_bytes == sum(on_disk.values())
    for series_row in series_rows:
        members = [row for row in rows if row.series_ref == series_row.id]
        assert series_row.instance_count == len(members)
        assert series_row.total_bytes == sum(on_disk[row.id] for row in members)


@pytest.fixture
def config(work_config: Config) -> Config:
    return work_config


def test_writeback_tags_every_instance_and_writes_the_sr(config: Config, database: Database) -> None:
    stored = store_study(config, database)
    label_id = add_labels(database)

    result = write_back(config, database, STUDY_UID, label_id, actor="test")

    assert (result.tagged, result.unchanged, result.skipped) == (len(SOURCES), 0, "")
    for path in stored.paths:
        dataset = pydicom.dcmread(path)
        record = read_label_tags(dataset)
        assert record is not None and record.model == "nl:2" and record.accession_number == "ACC-7"
        sop = str(dataset.SOPInstanceUID)
        assert bytes(dataset.PixelData) == stored.pixel_data[sop]
        assert dataset.file_meta.TransferSyntaxUID == stored.syntaxes[sop]
        assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files left
    (sr_row,) = generated_rows(database)
    assert sr_row.sop_instance_uid == result.sr_sop_instance_uid
    sr = pydicom.dcmread(config.storage.path / sr_row.path)
    assert sr.StudyInstanceUID == STUDY_UID
    assert read_label_sr(sr) == read_label_tags(pydicom.dcmread(stored.paths[0]))
    with database.connect() as connection:
        row = connection.execute(sa.select(writebacks)).one()
        sizes = {r.path: r.size_bytes for r in connection.execute(sa.select(instances)).all()}
        audit = connection.execute(sa.select(audit_events).where(audit_events.c.kind == "writeback.labels")).one()
    assert (row.state, row.action, row.instances_tagged, row.study_label_id) == ("done", "labels", 5, label_id)
    assert all(size == (config.storage.path / path).stat().st_size for path, size in sizes.items())
    assert_totals_match_files(config, database)
    assert audit.outcome == "success" and audit.identifiers["study_instance_uid"] == STUDY_UID


def test_writeback_again_changes_nothing(config: Config, database: Database) -> None:
    stored = store_study(config, database)
    label_id = add_labels(database)
    first = write_back(config, database, STUDY_UID, label_id)
    before = {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in stored.paths}

    second = write_back(config, database, STUDY_UID, label_id)

    assert (second.tagged, second.unchanged) == (0, len(SOURCES))
    assert {path: (path.stat().st_ino, path.stat().st_mtime_ns) for path in stored.paths} == before
    assert second.sr_sop_instance_uid == first.sr_sop_instance_uid and second.replaced_sr_sop_instance_uid is None
    assert len(generated_rows(database)) == 1


def test_a_late_instance_is_tagged_and_gets_a_new_sr(config: Config, database: Database) -> None:
    stored = store_study(config, database, SOURCES[:2])
    label_id = add_labels(database)
    first = write_back(config, database, STUDY_UID, label_id)
    late = store_study_instance(config, database, "CT_small.dcm", index=7)

    second = write_back(config, database, STUDY_UID, label_id)

    assert (second.tagged, second.unchanged) == (1, 2)
    assert read_label_tags(pydicom.dcmread(late)) is not None
    assert second.replaced_sr_sop_instance_uid == first.sr_sop_instance_uid
    (sr_row,) = generated_rows(database)
    sr = pydicom.dcmread(config.storage.path / sr_row.path)
    assert sr.InstanceNumber == sr_row.instance_number == 2
    referenced = {
        item.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series_item in study.ReferencedSeriesSequence
        for item in series_item.ReferencedSOPSequence
    }
    assert len(referenced) == 3 and len(stored.paths) == 2
    assert_totals_match_files(config, database)


def test_corrected_labels_replace_tags_and_sr(config: Config, database: Database) -> None:
    stored = store_study(config, database)
    old_id = add_labels(database, seed=0)
    old = write_back(config, database, STUDY_UID, old_id)
    new_id = add_labels(database, seed=1, supersede=old_id)

    new = write_back(config, database, STUDY_UID, new_id)
    stale = write_back(config, database, STUDY_UID, old_id)  # the old row's job, retried late

    assert stale.skipped and stale.tagged == 0
    assert new.replaced_sr_sop_instance_uid == old.sr_sop_instance_uid
    record = read_label_tags(pydicom.dcmread(stored.paths[0]))
    assert record is not None and record.labels["abnormal"] == 1
    (sr_row,) = generated_rows(database)
    assert sr_row.sop_instance_uid == new.sr_sop_instance_uid
    sr = pydicom.dcmread(config.storage.path / sr_row.path)
    assert read_label_sr(sr) == record
    predecessor = sr.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == old.sr_sop_instance_uid
    old_path = config.storage.path / str(instance_path(STUDY_UID, sr.SeriesInstanceUID, old.sr_sop_instance_uid))
    assert not old_path.exists()


def test_withdrawal_marks_tags_and_replaces_the_sr(config: Config, database: Database) -> None:
    stored = store_study(config, database)
    label_id = add_labels(database)
    labelled = write_back(config, database, STUDY_UID, label_id)
    withdrawn_at = withdraw(database, label_id)

    result = write_back(config, database, STUDY_UID, label_id, withdrawn=True)

    assert result.action == "withdrawn" and result.tagged == len(SOURCES)
    for path in stored.paths:
        block = read_label_block(pydicom.dcmread(path))
        assert block is not None and block.status == STATUS_WITHDRAWN and block.labelled_at == withdrawn_at
    (sr_row,) = generated_rows(database)
    sr = pydicom.dcmread(config.storage.path / sr_row.path)
    assert read_label_sr(sr) is None
    state = read_label_sr_state(sr)
    assert state is not None and state.status == STATUS_WITHDRAWN
    assert result.replaced_sr_sop_instance_uid == labelled.sr_sop_instance_uid
    # A withdrawal job for a row that is current again (a later correction) writes nothing.
    add_labels(database, seed=2)
    assert write_back(config, database, STUDY_UID, label_id, withdrawn=True).skipped


def test_switches_turn_parts_off(config: Config, database: Database) -> None:
    stored = store_study(config, database)
    label_id = add_labels(database)
    before = [path.read_bytes() for path in stored.paths]

    tags_off = with_overrides(config, writeback={"private_tags": False})
    result = write_back(tags_off, database, STUDY_UID, label_id)
    assert result.tagged == 0 and result.sr_sop_instance_uid is not None
    assert [path.read_bytes() for path in stored.paths] == before

    sr_off = with_overrides(config, writeback={"structured_report": False})
    result = write_back(sr_off, database, STUDY_UID, label_id)
    assert result.tagged == len(SOURCES) and result.sr_sop_instance_uid is None


def test_forward_jobs_are_queued_per_destination(config: Config, database: Database) -> None:
    store_study(config, database)
    label_id = add_labels(database)
    forwarding = with_overrides(config, writeback={"forward_to": ("PACS1@127.0.0.1:104", "PACS2@10.0.0.2:11112")})

    write_back(forwarding, database, STUDY_UID, label_id)
    write_back(forwarding, database, STUDY_UID, label_id)  # still pending: not queued twice

    with database.connect() as connection:
        rows = connection.execute(sa.select(jobs).where(jobs.c.kind == FORWARD).order_by(jobs.c.id)).all()
    assert [row.payload["destination"] for row in rows] == ["PACS1@127.0.0.1:104", "PACS2@10.0.0.2:11112"]
    assert all(row.payload["study_label_id"] == label_id for row in rows)


def test_failed_rewrite_leaves_the_original_file(
    config: Config, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = store_study(config, database, ["MR_small.dcm"])
    label_id = add_labels(database)
    original = stored.paths[0].read_bytes()

    def broken_replace(source: str, target: str) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(writeback_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk went away"):
        write_back(config, database, STUDY_UID, label_id)

    assert stored.paths[0].read_bytes() == original
    assert [p.name for p in stored.paths[0].parent.iterdir()] == [stored.paths[0].name]
    with database.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(writebacks)).scalar() == 0


def test_unknown_labels_row_fails_the_job(config: Config, database: Database) -> None:
    with pytest.raises(JobFailed):
        write_back(config, database, STUDY_UID, 999)


async def test_runner_runs_writeback_jobs(services: Services, database: Database) -> None:
    stored = store_study(services.config, database)
    label_id = add_labels(database)
    with database.begin() as connection:
        queue.enqueue(connection, WRITEBACK, f"{STUDY_UID}:{label_id}", writeback_payload(label_id))
        queue.enqueue(connection, WRITEBACK, "bad", {"study_label_id": "x"})

    def states() -> dict[str, str] | None:
        with database.connect() as connection:
            rows = {row.key: row.state for row in connection.execute(sa.select(jobs.c.key, jobs.c.state))}
        return rows if all(state in ("done", "failed") for state in rows.values()) else None

    async with running(services, writeback_handlers(services)):
        services.work_signal.notify(WRITEBACK)
        finished = await wait_for(states, what="writeback jobs finished")

    assert finished == {f"{STUDY_UID}:{label_id}": "done", "bad": "failed"}
    assert read_label_tags(pydicom.dcmread(stored.paths[0])) is not None


# --- forwarding to a real Orthanc ---------------------------------------------------------


def orthanc_instances(server: OrthancServer) -> dict[str, dict[str, object]]:
    """SOP Instance UID -> tags, for every instance Orthanc holds of the study."""
    result = {}
    for orthanc_id in server.find(StudyInstanceUID=STUDY_UID):
        tags = server.instance_tags(orthanc_id)
        result[str(tags["0008,0018"])] = tags
    return result


def block_tags(tags: dict[str, object]) -> dict[int, object]:
    """The NEUROLABEL block's elements by offset, found through the creator like any reader must."""
    slot = next(key[-2:] for key, value in tags.items() if key.startswith("0011,00") and value == "NEUROLABEL")
    prefix = f"0011,{slot}"
    return {int(key[-2:], 16): value for key, value in tags.items() if key.lower().startswith(prefix.lower())}


def test_forward_stores_tagged_instances_and_sr_in_orthanc(
    config: Config, database: Database, orthanc: OrthancServer  # noqa: F811
) -> None:
    stored = store_study(config, database)
    label_id = add_labels(database, seed=1)
    result = write_back(config, database, STUDY_UID, label_id)

    outcome = forward_study(config, database, STUDY_UID, orthanc_address(orthanc), study_label_id=label_id)

    assert outcome.sent == len(SOURCES) + 1
    held = orthanc_instances(orthanc)
    assert set(held) == set(stored.syntaxes) | {result.sr_sop_instance_uid}
    expected = read_label_tags(pydicom.dcmread(stored.paths[0]))
    assert expected is not None
    for sop, tags in held.items():
        if sop == result.sr_sop_instance_uid:
            continue
        block = block_tags(tags)
        bits = [int(bit) for bit in str(block[0x03]).split("\\")]
        assert bits == [expected.labels[key] for key in LABEL_KEYS]
        probabilities = [float(p) for p in str(block[0x04]).split("\\")]
        assert probabilities == pytest.approx([expected.probabilities[key] for key in LABEL_KEYS])
        assert block[0x05] == "nl" and block[0x06] == "2" and block[0x09] == "ACTIVE"
    # The SR as Orthanc stores it reads back to the same labels, and Orthanc indexed it in the study.
    sr_id = orthanc.find(SOPInstanceUID=result.sr_sop_instance_uid)[0]
    assert orthanc.instance_tags(sr_id)["0008,0060"] == "SR"
    sr = pydicom.dcmread(io.BytesIO(orthanc.instance_file(sr_id)))
    assert read_label_sr(sr) == expected
    # Pixel data arrived as it was received (no transcoding on the way).
    for sop, pixel in stored.pixel_data.items():
        copy = pydicom.dcmread(io.BytesIO(orthanc.instance_file(orthanc.find(SOPInstanceUID=sop)[0])))
        assert bytes(copy.PixelData) == pixel
    with database.connect() as connection:
        audit = connection.execute(sa.select(audit_events).where(audit_events.c.kind == "writeback.forward")).one()
    assert audit.outcome == "success"


def test_forward_to_an_absent_peer_fails_and_is_audited(config: Config, database: Database) -> None:
    store_study(config, database, ["MR_small.dcm"])
    quick = with_overrides(config, writeback={"forward_timeout_seconds": 2.0})
    closed = _closed_port()
    with pytest.raises(writeback_module.ForwardError):
        forward_study(quick, database, STUDY_UID, AeAddress("NOBODY", "127.0.0.1", closed))
    with database.connect() as connection:
        audit = connection.execute(sa.select(audit_events).where(audit_events.c.kind == "writeback.forward")).one()
    assert audit.outcome == "failure"


async def test_writeback_then_forward_through_the_runner(
    services: Services, database: Database, orthanc: OrthancServer  # noqa: F811
) -> None:
    services = Services(
        config=with_overrides(services.config, writeback={"forward_to": (orthanc.address,)}),
        database=services.database,
        work_signal=services.work_signal,
        instance_name=services.instance_name,
        registry=services.registry,
        metrics=services.metrics,
    )
    store_study(services.config, database)
    label_id = add_labels(database)
    with database.begin() as connection:
        queue.enqueue(connection, WRITEBACK, f"{STUDY_UID}:{label_id}", writeback_payload(label_id))

    def forwarded() -> bool:
        with database.connect() as connection:
            states = [row.state for row in connection.execute(sa.select(jobs.c.state).where(jobs.c.kind == FORWARD))]
        return states == ["done"]

    async with running(services, writeback_handlers(services)):
        services.work_signal.notify(WRITEBACK)
        await wait_for(forwarded, timeout=60, what="forward job done")

    held = orthanc_instances(orthanc)
    assert len(held) == len(SOURCES) + 1
    assert sum(1 for tags in held.values() if tags["0008,0060"] == "SR") == 1


def orthanc_address(server: OrthancServer) -> AeAddress:
    return parse_ae_address("test", server.address)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_atomic_write_replaces_in_place(tmp_path: Path) -> None:
    target = tmp_path / "a.dcm"
    target.write_bytes(b"old")
    writeback_module.atomic_write(target, b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["a.dcm"]



def test_writeback_removes_temporaries_of_a_killed_writer(config: Config, database: Database) -> None:
    # A daemon killed (kill -9) inside atomic_write leaves ".<name>.<pid>.<thread>.tmp" next to the file;
    # the next write-back of the study removes it (found by tests/reliability/test_crash.py).
    stored = store_study(config, database)
    label_id = add_labels(database)
    folder = stored.paths[0].parent
    dead_pid = 2**22 + 1  # above pid_max's default: no such process
    stale = folder / f".{stored.paths[0].name}.{dead_pid}.140163251762880.tmp"
    stale.write_bytes(b"half a file")
    live = folder / f".{stored.paths[1].name}.{os.getpid()}.1.tmp"
    live.write_bytes(b"being written by a live process")

    write_back(config, database, STUDY_UID, label_id)

    assert not stale.exists()
    assert live.exists()
