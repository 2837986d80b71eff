"""Pure linking and labelling decisions, from tables."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from daemon.config import LinkingConfig
from daemon.work.linking import (
    BY_ACCESSION,
    BY_FALLBACK,
    BY_STUDY_UID,
    BY_SUPERSEDED_REPORT,
    RELABELLED,
    SUPERSEDED,
    CurrentLabels,
    LabelSource,
    ReportFacts,
    StudyFacts,
    decide_labels,
    decide_link,
    parse_dicom_date,
)

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


def study(uid: str, accession: str | None = None, patient: str | None = "P1", date: str | None = "20260301",
          modalities: tuple[str, ...] = ("MR",), received_minutes: int = 0, issuer: str | None = None,
          linked_elsewhere: bool = False) -> StudyFacts:
    return StudyFacts(
        study_instance_uid=uid,
        accession_number=accession,
        patient_id=patient,
        issuer_of_patient_id=issuer,
        study_date=parse_dicom_date(date),
        modalities=modalities,
        last_received_at=T0 + dt.timedelta(minutes=received_minutes),
        linked_elsewhere=linked_elsewhere,
    )


def report(uid: str | None = None, accession: str | None = None, patient: str | None = "P1",
           date: dt.date | None = dt.date(2026, 3, 1), issuer: str | None = None) -> ReportFacts:
    return ReportFacts(1, uid, accession, patient, issuer, date)


LINKING = LinkingConfig()

# (case, report, studies, settings overrides, expected study uids, expected method)
CASES = [
    ("uid wins over accession", report(uid="1.2.3", accession="A1"),
     [study("1.2.3", "OTHER"), study("9.9", "A1")], {}, ("1.2.3",), BY_STUDY_UID),
    ("uid given, study absent: park even if the accession matches", report(uid="1.2.3", accession="A1"),
     [study("9.9", "A1")], {}, (), None),
    ("accession", report(accession="A1"), [study("1.1", "A1"), study("1.2", "A2")], {}, ("1.1",), BY_ACCESSION),
    ("accession absent: fallback on patient, date, MR", report(accession="A1"),
     [study("1.1", None)], {}, ("1.1",), BY_FALLBACK),
    ("fallback never takes a study with another accession", report(accession="A1"),
     [study("1.1", "A0")], {}, (), None),
    ("fallback off", report(), [study("1.1")], {"fallback": "none"}, (), None),
    ("fallback: other patient", report(patient="P2"), [study("1.1")], {}, (), None),
    ("fallback: report without patient id", report(patient=None), [study("1.1", patient=None)], {}, (), None),
    ("fallback: not MR", report(), [study("1.1", modalities=("CT",))], {}, (), None),
    ("fallback: MR among several modalities", report(), [study("1.1", modalities=("MR", "SR"))], {},
     ("1.1",), BY_FALLBACK),
    ("fallback: one day away is within the default window", report(), [study("1.1", date="20260302")], {},
     ("1.1",), BY_FALLBACK),
    ("fallback: two days away is outside", report(), [study("1.1", date="20260303")], {}, (), None),
    ("fallback: wider window", report(), [study("1.1", date="20260303")], {"fallback_window_days": 2},
     ("1.1",), BY_FALLBACK),
    ("fallback: study without a date", report(), [study("1.1", date=None)], {}, (), None),
    ("fallback: report without a date", report(date=None), [study("1.1")], {}, (), None),
    ("fallback: issuers differ", report(issuer="HOSP-A"), [study("1.1", issuer="HOSP-B")], {}, (), None),
    ("fallback: issuer known on one side only", report(issuer="HOSP-A"), [study("1.1")], {}, ("1.1",), BY_FALLBACK),
    ("fallback skips a study linked to another report", report(), [study("1.1", linked_elsewhere=True)], {},
     (), None),
    ("several by accession, latest by study date", report(accession="A1"),
     [study("1.1", "A1", date="20260301", received_minutes=50), study("1.2", "A1", date="20260302")],
     {}, ("1.2",), BY_ACCESSION),
    ("several by accession, same date: latest received", report(accession="A1"),
     [study("1.1", "A1", received_minutes=5), study("1.2", "A1", received_minutes=1)], {}, ("1.1",), BY_ACCESSION),
    ("several, policy all", report(accession="A1"), [study("1.2", "A1"), study("1.1", "A1")],
     {"multiple_matches": "all"}, ("1.1", "1.2"), BY_ACCESSION),
    ("several, policy none: park", report(accession="A1"), [study("1.2", "A1"), study("1.1", "A1")],
     {"multiple_matches": "none"}, (), None),
    ("several by fallback, latest", report(), [study("1.1", date="20260228"), study("1.2", date="20260301")],
     {}, ("1.2",), BY_FALLBACK),
    ("nothing at all", report(accession="A1"), [], {}, (), None),
]


@pytest.mark.parametrize(
    ("case", "facts", "studies", "overrides", "expected", "method"), CASES, ids=[c[0] for c in CASES]
)
def test_decide_link(case, facts, studies, overrides, expected, method) -> None:
    decision = decide_link(facts, studies, dataclasses.replace(LINKING, **overrides))
    assert decision.study_uids == expected
    assert decision.method == method
    assert decision.linked == bool(expected)
    assert decision.reason


def test_a_correction_without_identifiers_inherits_the_links_of_the_report_it_corrects() -> None:
    facts = dataclasses.replace(report(patient=None), supersedes_id=7)
    decision = decide_link(facts, [], LINKING, inherited_study_uids={"1.2", "1.1"})
    assert decision.study_uids == ("1.1", "1.2")
    assert decision.method == BY_SUPERSEDED_REPORT


def test_a_correction_with_its_own_accession_links_by_accession() -> None:
    facts = dataclasses.replace(report(accession="A2"), supersedes_id=7)
    decision = decide_link(facts, [study("2.2", "A2")], LINKING, inherited_study_uids={"1.1"})
    assert (decision.study_uids, decision.method) == (("2.2",), BY_ACCESSION)


def test_park_reasons_name_what_is_missing() -> None:
    assert "study instance uid" in decide_link(report(uid="1.2"), [], LINKING).reason
    assert "accession" in decide_link(report(accession="A1"), [], LINKING).reason
    assert "2 studies" in decide_link(
        report(accession="A1"),
        [study("1", "A1"), study("2", "A1")],
        dataclasses.replace(LINKING, multiple_matches="none"),
    ).reason


def source(report_id: int, prediction_id: int, minutes: int) -> LabelSource:
    return LabelSource(report_id, prediction_id, T0 + dt.timedelta(minutes=minutes))


# (case, current (report, prediction) or None, sources, expected (report, prediction) or None, reason)
LABEL_CASES = [
    ("no linked report with a prediction", None, [], None, None),
    ("first labels", None, [source(1, 10, 0)], (1, 10), None),
    ("already current", (1, 10), [source(1, 10, 0)], None, None),
    ("a correction supersedes", (1, 10), [source(1, 10, 0), source(2, 20, 5)], (2, 20), SUPERSEDED),
    ("a newer prediction of the same report is a relabel", (1, 10), [source(1, 11, 0)], (1, 11), RELABELLED),
    ("an older report does not displace a newer one", (2, 20), [source(1, 10, 0), source(2, 20, 5)], None, None),
]


@pytest.mark.parametrize(
    ("case", "current", "sources", "expected", "reason"), LABEL_CASES, ids=[c[0] for c in LABEL_CASES]
)
def test_decide_labels(case, current, sources, expected, reason) -> None:
    existing = CurrentLabels(99, *current) if current else None
    change = decide_labels(existing, sources)
    if expected is None:
        assert change is None
        return
    assert change is not None
    assert (change.source.report_id, change.source.prediction_id) == expected
    assert change.reason == reason
    assert change.retire == existing


@pytest.mark.parametrize(("text", "expected"), [
    ("20260301", dt.date(2026, 3, 1)), ("", None), (None, None), ("2026-03-01", None), ("20261301", None),
])
def test_parse_dicom_date(text, expected) -> None:
    assert parse_dicom_date(text) == expected
