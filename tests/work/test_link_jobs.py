"""Linking and the sidecar index through the job handlers, on rows as intake leaves them (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from daemon.app import Services
from daemon.store.schema import audit_events, report_link_states, report_links, study_link_states
from daemon.work import link_jobs
from daemon.work.link_jobs import (
    LINK,
    STUDY_STABLE,
    WITHDRAW,
    link_job,
    recheck,
    run_jobs,
    run_link_job,
    run_study_stable_job,
    run_withdraw_job,
)
from daemon.work.sidecar import WRITEBACK
from tests.work.rows import (
    add_prediction,
    add_report,
    add_study,
    claim_one,
    job_rows,
    label_rows,
    labels_of,
    set_study_state,
)

UID = "1.2.826.0.1.3680043.10.1.1"


def link(services: Services, report_id: int) -> list:
    job = claim_one(services.database, LINK, f"report:{report_id}", {"report_id": report_id})
    return run_link_job(services.database, services.config.linking, job)


def stable(services: Services, uid: str, tag: str = "") -> list:
    job = claim_one(services.database, STUDY_STABLE, f"study:{uid}{tag}", {"study_instance_uid": uid})
    return run_study_stable_job(services.database, services.config.linking, job)


def withdraw(services: Services, report_id: int) -> list:
    job = claim_one(services.database, WITHDRAW, f"report:{report_id}", {"report_id": report_id})
    return run_withdraw_job(services.database, services.config.linking, job)


def report_state(services: Services, report_id: int) -> str | None:
    with services.database.connect() as connection:
        return connection.execute(
            sa.select(report_link_states.c.state).where(report_link_states.c.report_id == report_id)
        ).scalar()


def study_state(services: Services, uid: str) -> str | None:
    with services.database.connect() as connection:
        return connection.execute(
            sa.select(study_link_states.c.state).where(study_link_states.c.study_instance_uid == uid)
        ).scalar()


def writeback_payloads(services: Services) -> list[dict]:
    return [dict(row.payload) for row in job_rows(services.database, WRITEBACK)]


def audit_kinds(services: Services) -> list[str]:
    with services.database.connect() as connection:
        return list(connection.execute(sa.select(audit_events.c.kind).order_by(audit_events.c.id)).scalars())


def classified_report(services: Services, **fields) -> int:
    report_id = add_report(services.database, **fields)
    add_prediction(services.database, report_id, labels_of(mass=1))
    return report_id


async def test_report_before_images_is_parked_then_labelled_when_the_study_is_stable(services: Services) -> None:
    report_id = classified_report(services, accession="ACC1")
    assert link(services, report_id) == []
    assert report_state(services, report_id) == "parked"
    assert label_rows(services.database) == []

    add_study(services.database, UID, accession="ACC1", state="receiving")
    add_study(services.database, "9.9.9", accession="OTHER")  # another patient visit: never linked
    set_study_state(services.database, UID, "stable")
    queued = stable(services, UID)

    (row,) = label_rows(services.database)
    assert (row.study_instance_uid, row.report_id, row.current, row.accession_number) == (UID, report_id, True, "ACC1")
    assert row.labels == labels_of(mass=1)
    assert row.model == "neurolabel_report:1"
    assert [q.study_label_id for q in queued] == [row.id]
    assert writeback_payloads(services) == [{"study_instance_uid": UID, "study_label_id": row.id}]
    assert job_rows(services.database, WRITEBACK)[0].key == f"study:{UID}:labels:{row.id}"
    assert report_state(services, report_id) == "linked"
    assert study_state(services, UID) == "linked"
    assert "linking.linked" in audit_kinds(services) and "labels.written" in audit_kinds(services)


async def test_images_before_report(services: Services) -> None:
    add_study(services.database, UID, accession="ACC1")
    assert stable(services, UID) == []
    assert study_state(services, UID) == "waiting"

    report_id = classified_report(services, accession="ACC1")
    (queued,) = link(services, report_id)
    (row,) = label_rows(services.database)
    assert queued.study_label_id == row.id and row.report_id == report_id
    assert study_state(services, UID) == "linked"


async def test_a_study_still_receiving_is_linked_but_labelled_only_once_stable(services: Services) -> None:
    add_study(services.database, UID, accession="ACC1", state="receiving")
    report_id = classified_report(services, accession="ACC1")
    assert link(services, report_id) == []
    assert report_state(services, report_id) == "linked"
    assert label_rows(services.database) == []
    set_study_state(services.database, UID, "stable")
    assert len(stable(services, UID)) == 1
    assert len(label_rows(services.database)) == 1


async def test_linking_by_study_uid_and_by_fallback(services: Services) -> None:
    add_study(services.database, UID, accession="ACC-IMG")
    add_study(services.database, "2.2.2", accession=None, patient_id="P7", study_date="20260302")
    by_uid = classified_report(services, study_uid=UID, accession="ACC-RIS")
    by_fallback = classified_report(services, patient_id="P7")
    link(services, by_uid)
    link(services, by_fallback)
    with services.database.connect() as connection:
        methods = dict(connection.execute(sa.select(report_links.c.report_id, report_links.c.method)).all())
    assert methods == {by_uid: "study_uid", by_fallback: "fallback"}


async def test_a_batch_commits_together_and_a_bad_job_does_not_hold_the_others_back(services: Services) -> None:
    add_study(services.database, UID, accession="ACC1")
    add_study(services.database, "2.2.2", accession="ACC2")
    good = [classified_report(services, accession=accession) for accession in ("ACC1", "ACC2")]
    jobs = [claim_one(services.database, LINK, f"report:{report_id}", {"report_id": report_id})
            for report_id in (good[0], 999_999, good[1])]
    queued, errors = run_jobs(services.database, services.config.linking, link_job, jobs)
    assert {q.study_instance_uid for q in queued} == {UID, "2.2.2"}
    assert list(errors) == [jobs[1].id] and "does not exist" in str(errors[jobs[1].id])
    assert [row.state for row in job_rows(services.database, LINK)] == ["done", "running", "done"]
    # Each job again in a transaction of its own: its audit rows and write-back job written with it.
    assert audit_kinds(services).count("linking.linked") == audit_kinds(services).count("labels.written") == 2
    assert len(job_rows(services.database, WRITEBACK)) == 2


async def test_a_batch_writes_its_audit_rows_and_writeback_jobs_with_its_commit(services: Services) -> None:
    add_study(services.database, UID, accession="ACC1")
    add_study(services.database, "2.2.2", accession="ACC2")
    reports = [classified_report(services, accession=accession) for accession in ("ACC1", "ACC2")]
    jobs = [claim_one(services.database, LINK, f"report:{report_id}", {"report_id": report_id})
            for report_id in reports]
    queued, errors = run_jobs(services.database, services.config.linking, link_job, jobs)
    assert errors == {} and len(queued) == 2
    assert audit_kinds(services).count("linking.linked") == audit_kinds(services).count("labels.written") == 2
    written = job_rows(services.database, WRITEBACK)
    assert sorted(row.payload["study_label_id"] for row in written) == sorted(q.study_label_id for q in queued)
    assert [row.state for row in written] == ["pending", "pending"]


async def test_running_a_job_twice_labels_once(services: Services) -> None:
    add_study(services.database, UID, accession="ACC1")
    report_id = classified_report(services, accession="ACC1")
    link(services, report_id)
    assert link(services, report_id) == []
    assert len(label_rows(services.database)) == 1
    assert len(job_rows(services.database, WRITEBACK)) == 1


async def test_a_correction_supersedes_the_labels_and_keeps_the_history(services: Services) -> None:
    add_study(services.database, UID, accession="ACC1")
    first = classified_report(services, accession="ACC1")
    link(services, first)
    # HL7 intake: the correction is a new report that supersedes the first, which it marks superseded.
    correction = add_report(services.database, accession="ACC1", supersedes_id=first)
    with services.database.begin() as connection:
        connection.execute(sa.text("UPDATE reports SET state = 'superseded' WHERE id = :id"), {"id": first})
    add_prediction(services.database, correction, labels_of(acute_stroke=1))
    (queued,) = link(services, correction)

    old, new = label_rows(services.database, UID)
    assert (old.report_id, old.current, old.superseded_reason) == (first, False, "superseded")
    assert old.superseded_at is not None
    assert (new.report_id, new.current, new.labels) == (correction, True, labels_of(acute_stroke=1))
    assert queued.study_label_id == new.id
    assert [p["study_label_id"] for p in writeback_payloads(services)] == [old.id, new.id]


async def test_a_correction_without_identifiers_follows_the_report_it_corrects(services: Services) -> None:
    add_study(services.database, UID, accession="ACC1")
    first = classified_report(services, accession="ACC1")
    link(services, first)
    correction = classified_report(services, accession=None, patient_id=None, supersedes_id=first)
    (queued,) = link(services, correction)
    assert label_rows(services.database)[-1].report_id == correction


async def test_a_cancellation_withdraws_the_labels_and_queues_the_retraction(services: Services) -> None:
    add_study(services.database, UID, accession="ACC1")
    report_id = classified_report(services, accession="ACC1")
    link(services, report_id)
    with services.database.begin() as connection:
        connection.execute(sa.text("UPDATE reports SET state = 'withdrawn' WHERE id = :id"), {"id": report_id})
    (queued,) = withdraw(services, report_id)

    (row,) = label_rows(services.database)
    assert (row.current, row.superseded_reason) == (False, "withdrawn")
    assert queued.withdrawn and queued.study_label_id == row.id
    retraction = job_rows(services.database, WRITEBACK)[-1]
    assert retraction.payload == {"study_instance_uid": UID, "study_label_id": row.id, "withdrawn": True}
    assert retraction.key == f"study:{UID}:labels:{row.id}:withdrawn"
    assert report_state(services, report_id) == "withdrawn"
    assert "labels.withdrawn" in audit_kinds(services)


async def test_after_a_cancellation_another_linked_report_labels_the_study(services: Services) -> None:
    add_study(services.database, UID, accession="ACC1")
    older = classified_report(services, accession="ACC1")
    newer = classified_report(services, accession="ACC1")
    link(services, older)
    link(services, newer)
    assert label_rows(services.database)[-1].report_id == newer
    with services.database.begin() as connection:
        connection.execute(sa.text("UPDATE reports SET state = 'withdrawn' WHERE id = :id"), {"id": newer})
    queued = withdraw(services, newer)
    assert [q.withdrawn for q in queued] == [True, False]
    current = [row for row in label_rows(services.database) if row.current]
    assert [row.report_id for row in current] == [older]


async def test_a_study_stable_again_is_written_back_again(services: Services) -> None:
    add_study(services.database, UID, accession="ACC1")
    report_id = classified_report(services, accession="ACC1")
    link(services, report_id)
    set_study_state(services.database, UID, "receiving")
    assert stable(services, UID, ":1") == []  # more instances arriving: nothing to do yet
    set_study_state(services.database, UID, "stable")
    (queued,) = stable(services, UID, ":2")
    (row,) = label_rows(services.database)
    assert queued.study_label_id == row.id
    keys = [job.key for job in job_rows(services.database, WRITEBACK)]
    assert len(keys) == 2 and keys[1].startswith(f"study:{UID}:labels:{row.id}:stable:")


async def test_stable_again_is_written_back_even_when_a_waiting_report_links_elsewhere(services: Services) -> None:
    add_study(services.database, UID, accession="ACC1")
    link(services, classified_report(services, accession="ACC1"))
    waiting = classified_report(services, accession=None)  # only the fallback can place it
    link(services, waiting)
    assert report_state(services, waiting) == "parked"
    add_study(services.database, "2.2.2", accession=None)  # its own study_stable job is still to come
    set_study_state(services.database, UID, "receiving")
    set_study_state(services.database, UID, "stable")
    queued = stable(services, UID, ":again")
    assert {q.study_instance_uid for q in queued} == {UID, "2.2.2"}
    assert report_state(services, waiting) == "linked"


async def test_unmatched_reports_and_studies_are_reported_after_the_expiry(services: Services) -> None:
    report_id = classified_report(services, accession="NEVER")
    link(services, report_id)
    add_study(services.database, UID, accession="LONELY")
    stable(services, UID)
    now = dt.datetime.now(dt.timezone.utc)

    early = recheck(services.database, services.config.linking, now + dt.timedelta(hours=1))
    assert (early.checked, early.reports_expired, early.studies_expired, early.parked) == (1, 0, 0, 1)
    late = recheck(services.database, services.config.linking, now + dt.timedelta(hours=73))
    assert (late.reports_expired, late.studies_expired, late.unmatched) == (1, 1, 1)
    assert report_state(services, report_id) == "unmatched"
    assert study_state(services, UID) == "unmatched"
    assert {"linking.report_unmatched", "linking.study_unmatched"} <= set(audit_kinds(services))
    assert [row.report_id for row in link_jobs.parked_or_unmatched(services.database)] == [report_id]
    again = recheck(services.database, services.config.linking, now + dt.timedelta(hours=74))
    assert (again.checked, again.reports_expired, again.studies_expired) == (0, 0, 0)

    # Its study finally arrives: an unmatched report is still linked.
    add_study(services.database, "3.3.3", accession="NEVER")
    assert len(stable(services, "3.3.3")) == 1
    assert report_state(services, report_id) == "linked"


async def test_the_recheck_links_a_parked_report_whose_study_came_without_a_stable_job(services: Services) -> None:
    report_id = classified_report(services, accession="ACC1")
    link(services, report_id)
    add_study(services.database, UID, accession="ACC1")
    summary = recheck(services.database, services.config.linking)
    assert (summary.checked, summary.linked, len(summary.queued)) == (1, 1, 1)
    assert report_state(services, report_id) == "linked"


async def test_a_parked_report_that_was_superseded_leaves_the_parked_list(services: Services) -> None:
    report_id = classified_report(services, accession="ACC1")
    link(services, report_id)
    with services.database.begin() as connection:
        connection.execute(sa.text("UPDATE reports SET state = 'superseded' WHERE id = :id"), {"id": report_id})
    recheck(services.database, services.config.linking)
    assert report_state(services, report_id) == "superseded"


async def test_a_newer_prediction_of_the_same_report_relabels(services: Services) -> None:
    add_study(services.database, UID, accession="ACC1")
    report_id = classified_report(services, accession="ACC1")
    link(services, report_id)
    add_prediction(services.database, report_id, labels_of(atrophy=1), model="neurolabel_report:2")
    from daemon.work.sidecar import label_study

    with services.database.begin() as connection:
        assert label_study(connection, UID, dt.datetime.now(dt.timezone.utc)) is not None
    old, new = label_rows(services.database)
    assert (old.superseded_reason, new.model, new.current) == ("relabelled", "neurolabel_report:2", True)
