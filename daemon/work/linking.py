"""Which study a report belongs to, and which report's labels a study carries: pure decisions.

Linking, in order: the Study Instance UID when the report carries one (nothing else: it is
authoritative), else the accession number, else the studies its superseded report was linked to (a
correction without identifiers), else the configured fallback: same patient, study date within the
window, an MR study, and no conflicting accession. Several matches follow `[linking] multiple_matches`.
A report with no match is parked and looked at again when a study becomes stable and on a schedule.

The adapters (daemon/work/link_jobs.py) load the facts, call these functions and write what they decide.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from daemon.config import LinkingConfig

# How a report was linked to a study (report_links.method).
BY_STUDY_UID = "study_uid"
BY_ACCESSION = "accession"
BY_SUPERSEDED_REPORT = "supersedes"
BY_FALLBACK = "fallback"

FALLBACK_MODALITY = "MR"

# Why a study's current labels row stopped being current (study_labels.superseded_reason).
SUPERSEDED = "superseded"
WITHDRAWN = "withdrawn"
RELABELLED = "relabelled"


@dataclass(frozen=True)
class ReportFacts:
    id: int
    study_instance_uid: str | None
    accession_number: str | None
    patient_id: str | None
    issuer_of_patient_id: str | None
    report_date: dt.date | None
    supersedes_id: int | None = None


@dataclass(frozen=True)
class StudyFacts:
    study_instance_uid: str
    accession_number: str | None
    patient_id: str | None
    issuer_of_patient_id: str | None
    study_date: dt.date | None
    modalities: tuple[str, ...]
    last_received_at: dt.datetime
    # Already linked to another active report (the fallback never takes such a study).
    linked_elsewhere: bool = False


@dataclass(frozen=True)
class LinkDecision:
    study_uids: tuple[str, ...]  # empty: park
    method: str | None
    reason: str

    @property
    def linked(self) -> bool:
        return bool(self.study_uids)


def park(reason: str) -> LinkDecision:
    return LinkDecision((), None, reason)


def decide_link(
    report: ReportFacts,
    studies: Sequence[StudyFacts],
    settings: LinkingConfig,
    inherited_study_uids: Collection[str] = (),
) -> LinkDecision:
    """Link `report` to some of `studies` (every study that could match it), or park it with the reason."""
    if report.study_instance_uid:
        matches = [s for s in studies if s.study_instance_uid == report.study_instance_uid]
        if matches:
            return LinkDecision((report.study_instance_uid,), BY_STUDY_UID, "study instance uid")
        return park("study not received yet (by study instance uid)")
    if report.accession_number:
        matches = [s for s in studies if s.accession_number == report.accession_number]
        if matches:
            return choose(matches, BY_ACCESSION, settings)
    if inherited_study_uids:
        uids = tuple(sorted(inherited_study_uids))
        return LinkDecision(uids, BY_SUPERSEDED_REPORT, "linked as the report it corrects")
    if settings.fallback == "patient_date_modality":
        matches = [s for s in studies if fallback_matches(report, s, settings.fallback_window_days)]
        if matches:
            return choose(matches, BY_FALLBACK, settings)
    if report.accession_number:
        return park("study not received yet (by accession number)")
    return park("no study matches (no study instance uid or accession number in the report)")


def fallback_matches(report: ReportFacts, study: StudyFacts, window_days: int) -> bool:
    """Same patient (and issuer where both know it), an MR study within the window, no conflicting accession."""
    if not report.patient_id or report.patient_id != study.patient_id:
        return False
    if report.issuer_of_patient_id and study.issuer_of_patient_id:
        if report.issuer_of_patient_id != study.issuer_of_patient_id:
            return False
    if FALLBACK_MODALITY not in study.modalities or study.linked_elsewhere:
        return False
    if report.accession_number and study.accession_number and report.accession_number != study.accession_number:
        return False
    if report.report_date is None or study.study_date is None:
        return False
    return abs((study.study_date - report.report_date).days) <= window_days


def choose(matches: Sequence[StudyFacts], method: str, settings: LinkingConfig) -> LinkDecision:
    """Apply `[linking] multiple_matches` when more than one study matches."""
    if len(matches) == 1:
        return LinkDecision((matches[0].study_instance_uid,), method, method)
    policy = settings.multiple_matches
    if policy == "all":
        uids = tuple(sorted(s.study_instance_uid for s in matches))
        return LinkDecision(uids, method, f"{method}, all {len(matches)}")
    if policy == "latest":
        latest = max(matches, key=lambda s: (s.study_date or dt.date.min, s.last_received_at))
        return LinkDecision((latest.study_instance_uid,), method, f"{method}, latest of {len(matches)}")
    return park(f"{len(matches)} studies match by {method} ([linking] multiple_matches = none)")


# --- which labels a study carries -----------------------------------------------------


@dataclass(frozen=True)
class LabelSource:
    """An active report linked to the study, with its newest prediction."""

    report_id: int
    prediction_id: int
    report_created_at: dt.datetime


@dataclass(frozen=True)
class CurrentLabels:
    id: int
    report_id: int
    prediction_id: int


@dataclass(frozen=True)
class LabelChange:
    source: LabelSource
    # The current row to retire, and why; None when the study has no current labels.
    retire: CurrentLabels | None
    reason: str | None


def decide_labels(current: CurrentLabels | None, sources: Sequence[LabelSource]) -> LabelChange | None:
    """The newest linked report's newest prediction becomes current; None when that is already so (or none)."""
    if not sources:
        return None
    best = max(sources, key=lambda s: (s.report_created_at, s.report_id, s.prediction_id))
    if current is None:
        return LabelChange(best, None, None)
    if (current.report_id, current.prediction_id) == (best.report_id, best.prediction_id):
        return None
    if current.report_id == best.report_id:
        return LabelChange(best, current, RELABELLED)
    return LabelChange(best, current, SUPERSEDED)


def parse_dicom_date(value: str | None) -> dt.date | None:
    """A DICOM DA (YYYYMMDD) or None when empty or malformed."""
    if not value:
        return None
    try:
        return dt.datetime.strptime(value.strip()[:8], "%Y%m%d").date()
    except ValueError:
        return None

