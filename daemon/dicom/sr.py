"""The labels of one study as a DICOM Structured Report (TID 1500 Measurement Report), built with highdicom.

One measurement group holds, per label, a qualitative evaluation (the finding's
code: Present or Absent) and a numeric measurement (the same code, the model's
probability, unit "1", method 99NEUROLABEL MODELPROB). The group's Algorithm
Identification names the model and its version; the observer is the model as a
device (manufacturer "neurolabel"); its Observation DateTime is when the labels
were made. Evidence is every instance of the study, so the SR references it.

Versions: each labels version of a study is a new SR instance in the study's one
neurolabel SR series; its UIDs derive from (study, labels row, withdrawn, the
instances referenced) so a retried write-back produces the same object and
any change of content gets a new SOP Instance UID. A newer SR lists the one it
replaces in the Predecessor Documents Sequence; a withdrawal is an SR whose
group carries "Label status: Labels withdrawn" and no per-label content.
docs/dicom-labels.md documents the codes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from daemon.dicom import highdicom_lookups
from daemon.dicom.private_tags import (
    STATUS_ACTIVE,
    STATUS_WITHDRAWN,
    LabelTags,
    as_utc,
    format_dt,
    join_model,
    parse_dt,
    split_model,
)
from daemon.labels import LABEL_KEYS, LabelRecord

PRIVATE_SCHEME = "99NEUROLABEL"
PRIVATE_SCHEME_NAME = "neurolabel label codes"
MANUFACTURER = "neurolabel"
SR_SERIES_NUMBER = 9901
SERIES_DESCRIPTION = "neurolabel labels"
TRACKING_IDENTIFIER = "neurolabel labels"
COMPREHENSIVE_SR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"


@dataclass(frozen=True)
class Concept:
    value: str
    scheme: str
    meaning: str

    def coded(self) -> hd.sr.CodedConcept:
        return hd.sr.CodedConcept(value=self.value, scheme_designator=self.scheme, meaning=self.meaning)

    def matches(self, item: Dataset) -> bool:
        return str(item.CodeValue) == self.value and str(item.CodingSchemeDesignator) == self.scheme


# SNOMED CT codes as DICOM PS3.16 (via pydicom's concept tables) or SNOMED CT's own
# tables give them; the private scheme where no SNOMED concept matches the label's policy.
FINDINGS: dict[str, Concept] = {
    "abnormal": Concept("263654008", "SCT", "Abnormal"),
    "acute_stroke": Concept("230690007", "SCT", "Cerebrovascular accident"),
    "mass": Concept("MASS", PRIVATE_SCHEME, "Intracranial space-occupying lesion"),
    "atrophy": Concept("278849000", "SCT", "Cerebral atrophy"),
    "vascular": Concept("62914000", "SCT", "Cerebrovascular disease"),
    "small_vessel_disease": Concept("SVD", PRIVATE_SCHEME, "Cerebral small vessel disease"),
    "inflammation": Concept("6118003", "SCT", "Demyelinating disease of central nervous system"),
    "encephalomalacia": Concept("58762006", "SCT", "Encephalomalacia"),
}
PRESENT = Concept("52101004", "SCT", "Present")
ABSENT = Concept("272519000", "SCT", "Absent")
MODEL_PROBABILITY = Concept("MODELPROB", PRIVATE_SCHEME, "Model probability")
LABEL_STATUS = Concept("LABELSTATUS", PRIVATE_SCHEME, "Label status")
LABELS_WITHDRAWN = Concept("WITHDRAWN", PRIVATE_SCHEME, "Labels withdrawn")
NO_UNITS = Concept("1", "UCUM", "no units")
MEASUREMENT_GROUP = Concept("125007", "DCM", "Measurement Group")
ALGORITHM_NAME = Concept("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = Concept("111003", "DCM", "Algorithm Version")
MEASUREMENT_METHOD = Concept("370129005", "SCT", "Measurement Method")


@dataclass(frozen=True)
class SrIdentity:
    """Where an SR version sits: its series (one per study) and instance."""

    series_instance_uid: str
    sop_instance_uid: str
    instance_number: int


def derived_uid(*parts: str) -> str:
    """A UID under 2.25 (UUID-derived, PS3.5 B.2) that is the same for the same parts."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '|'.join(parts)).int}"


def sr_identity(
    study_instance_uid: str,
    study_label_id: int,
    *,
    withdrawn: bool = False,
    evidence_uids: Iterable[str] = (),
    instance_number: int = 1,
) -> SrIdentity:
    """Deterministic UIDs: writing the same labels row over the same instances again gives the same SR;
    new instances of the study give a new SR (its content changed, so its SOP Instance UID must)."""
    series = derived_uid("neurolabel-sr-series", study_instance_uid)
    evidence = hashlib.sha256("\\".join(sorted(evidence_uids)).encode()).hexdigest()
    state = "withdrawn" if withdrawn else "active"
    sop = derived_uid("neurolabel-sr", study_instance_uid, str(study_label_id), state, evidence)
    return SrIdentity(series, sop, instance_number)


def build_label_sr(
    record: LabelRecord,
    evidence: Sequence[Dataset],
    identity: SrIdentity,
    *,
    previous_versions: Sequence[Dataset] = (),
    withdrawn_at: dt.datetime | None = None,
) -> hd.sr.ComprehensiveSR:
    """The SR for `record` (or, with `withdrawn_at`, the SR that withdraws it), referencing `evidence`."""
    content = label_content(record, withdrawn_at=withdrawn_at)
    return label_document(record, evidence, identity, content, previous_versions=previous_versions)


def label_content(record: LabelRecord, *, withdrawn_at: dt.datetime | None = None) -> Dataset:
    """The document's TID 1500 root content item (Measurement Report) for `record`, or for its withdrawal."""
    name, version = split_model(record.model)
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=derived_uid("neurolabel-model", record.model),
        name=name,
        manufacturer_name=MANUFACTURER,
        model_name=record.model,
    )
    observation_context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    if withdrawn_at is None:
        evaluations = [
            hd.sr.QualitativeEvaluation(
                FINDINGS[key].coded(), (PRESENT if int(record.labels[key]) else ABSENT).coded()
            )
            for key in LABEL_KEYS
        ]
        measurements = [
            hd.sr.Measurement(
                name=FINDINGS[key].coded(),
                value=float(record.probabilities[key]),
                unit=NO_UNITS.coded(),
                method=MODEL_PROBABILITY.coded(),
            )
            for key in LABEL_KEYS
        ]
        observed_at = record.labelled_at
    else:
        evaluations = [hd.sr.QualitativeEvaluation(LABEL_STATUS.coded(), LABELS_WITHDRAWN.coded())]
        measurements = []
        observed_at = withdrawn_at
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid(record.study_instance_uid),
            identifier=TRACKING_IDENTIFIER,
        ),
        algorithm_id=hd.sr.AlgorithmIdentification(name=name, version=version or "unversioned"),
        qualitative_evaluations=evaluations,
        measurements=measurements or None,
    )
    # The observation happened when the model labelled the report, not when this file was written.
    group[0].ObservationDateTime = format_dt(observed_at)
    report = hd.sr.MeasurementReport(
        observation_context=observation_context,
        procedure_reported=codes.LN.MRIUnspecifiedBodyRegion,
        imaging_measurements=[group],
    )
    root: Dataset = report[0]
    return root


def label_document(
    record: LabelRecord,
    evidence: Sequence[Dataset],
    identity: SrIdentity,
    content: Dataset,
    *,
    previous_versions: Sequence[Dataset] = (),
) -> hd.sr.ComprehensiveSR:
    """The Comprehensive SR document around the root content item `content`: patient and study attributes from
    the first evidence instance, the evidence and predecessor references, the series and instance."""
    if not evidence:
        raise ValueError("an SR needs at least one instance of the study as evidence")
    highdicom_lookups.install()  # its IOD table scans, once per SOP class (~2 ms of CPU a document)
    name, version = split_model(record.model)
    sr = hd.sr.ComprehensiveSR(
        evidence=complete_evidence(evidence),
        content=content,
        series_instance_uid=identity.series_instance_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=identity.sop_instance_uid,
        instance_number=identity.instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=name,
        software_versions=version or "unversioned",
        series_description=SERIES_DESCRIPTION,
        is_complete=True,
        previous_versions=list(previous_versions) or None,
        coding_schemes=[CodingSchemeIdentificationItem(PRIVATE_SCHEME, name=PRIVATE_SCHEME_NAME)],
    )
    if not sr.get("AccessionNumber") and record.accession_number:
        sr.AccessionNumber = record.accession_number
    return sr


def tracking_uid(study_instance_uid: str) -> str:
    """The Tracking Unique Identifier of a study's label group (the same in every version of its SR)."""
    return derived_uid("neurolabel-tracking", study_instance_uid)


def read_label_sr(dataset: Dataset) -> LabelRecord | None:
    """The ACTIVE labels a neurolabel SR carries; None for other SRs, non-SR objects and withdrawal SRs."""
    found = read_label_sr_state(dataset)
    return found.record if found is not None else None


def read_label_sr_state(dataset: Dataset) -> LabelTags | None:
    """What a neurolabel SR says (labels, or withdrawn); None when `dataset` is not one."""
    group = _label_group(dataset)
    if group is None:
        return None
    children = list(group.get("ContentSequence", []))
    algorithm_name = _text(children, ALGORITHM_NAME)
    algorithm_version = _text(children, ALGORITHM_VERSION)
    model = join_model(algorithm_name or "", "" if algorithm_version == "unversioned" else algorithm_version or "")
    observed = group.get("ObservationDateTime")
    labelled_at = parse_dt(str(observed)) if observed else as_utc(dt.datetime.now(dt.timezone.utc))
    study_uid = str(dataset.get("StudyInstanceUID", ""))
    accession = str(dataset.get("AccessionNumber", "")) or None
    withdrawn = any(
        item.ValueType == "CODE"
        and LABEL_STATUS.matches(item.ConceptNameCodeSequence[0])
        and LABELS_WITHDRAWN.matches(item.ConceptCodeSequence[0])
        for item in children
    )
    if withdrawn:
        return LabelTags(STATUS_WITHDRAWN, None, study_uid, model, accession, labelled_at)
    labels: dict[str, int] = {}
    probabilities: dict[str, float] = {}
    for item in children:
        name = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
        key = _label_key(name) if name is not None else None
        if key is None:
            continue
        if item.ValueType == "CODE":
            value = item.ConceptCodeSequence[0]
            if PRESENT.matches(value):
                labels[key] = 1
            elif ABSENT.matches(value):
                labels[key] = 0
        elif item.ValueType == "NUM" and item.get("MeasuredValueSequence"):
            measured = item.MeasuredValueSequence[0]
            # FloatingPointValue holds the exact double when the DS text had to round it.
            exact = measured.get("FloatingPointValue")
            probabilities[key] = float(exact if exact is not None else measured.NumericValue)
    if set(labels) != set(LABEL_KEYS) or set(probabilities) != set(LABEL_KEYS):
        return None
    record = LabelRecord(
        study_instance_uid=study_uid,
        accession_number=accession,
        labels={key: labels[key] for key in LABEL_KEYS},
        probabilities={key: probabilities[key] for key in LABEL_KEYS},
        model=model,
        labelled_at=labelled_at,
    )
    return LabelTags(STATUS_ACTIVE, record, study_uid, model, accession, labelled_at)


# --- helpers --------------------------------------------------------------------------

# Type 2 attributes highdicom copies from the first evidence instance; they may be missing in received files.
_EVIDENCE_TYPE2 = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                   "StudyDate", "StudyTime", "ReferringPhysicianName")


def complete_evidence(evidence: Sequence[Dataset]) -> list[Dataset]:
    """`evidence` with the first instance's missing Type 2 attributes (that highdicom copies) empty."""
    first = Dataset(dict(evidence[0].items()))  # a shallow copy, its elements as they are (raw ones undecoded)
    for keyword in _EVIDENCE_TYPE2:
        if keyword not in first:
            setattr(first, keyword, "")
    return [first, *evidence[1:]]


def _walk(items: Sequence[Dataset]) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _label_group(dataset: Dataset) -> Dataset | None:
    if "ContentSequence" not in dataset or dataset.get("Modality") != "SR":
        return None
    for item in _walk(dataset.ContentSequence):
        if item.get("ValueType") != "CONTAINER" or "ConceptNameCodeSequence" not in item:
            continue
        if not MEASUREMENT_GROUP.matches(item.ConceptNameCodeSequence[0]):
            continue
        for child in item.get("ContentSequence", []):
            if child.get("ValueType") == "TEXT" and str(child.get("TextValue", "")) == TRACKING_IDENTIFIER:
                return item
    return None


def _text(children: Sequence[Dataset], concept: Concept) -> str | None:
    for item in _walk(children):
        if item.get("ValueType") == "TEXT" and concept.matches(item.ConceptNameCodeSequence[0]):
            return str(item.TextValue)
    return None


def _label_key(name: Dataset) -> str | None:
    for key, concept in FINDINGS.items():
        if concept.matches(name):
            return key
    return None
