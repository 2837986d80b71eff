"""The label contract: keys, their order, and the rules that bind them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

LABEL_KEYS: tuple[str, ...] = (
    "abnormal",
    "acute_stroke",
    "mass",
    "atrophy",
    "vascular",
    "small_vessel_disease",
    "inflammation",
    "encephalomalacia",
)
CATEGORY_KEYS: tuple[str, ...] = LABEL_KEYS[1:]


def enforce_abnormal_implication(labels: Mapping[str, int]) -> dict[str, int]:
    """Any positive category implies abnormal (label policy)."""
    result = {key: int(labels.get(key, 0)) for key in LABEL_KEYS}
    if any(result[key] for key in CATEGORY_KEYS):
        result["abnormal"] = 1
    return result


def validate_label_mapping(labels: Mapping[str, object], *, partial: bool = False) -> dict[str, int]:
    """Return labels as {key: 0|1}; raise ValueError naming the first bad key or value."""
    unknown = sorted(set(labels) - set(LABEL_KEYS))
    if unknown:
        raise ValueError(f"unknown label key {unknown[0]!r}; expected one of {', '.join(LABEL_KEYS)}")
    if not partial:
        missing = [key for key in LABEL_KEYS if key not in labels]
        if missing:
            raise ValueError(f"missing label key {missing[0]!r}")
    result: dict[str, int] = {}
    for key in LABEL_KEYS:
        if key not in labels:
            continue
        value = labels[key]
        if isinstance(value, bool) or value not in (0, 1):
            raise ValueError(f"label {key!r} must be 0 or 1, got {value!r}")
        result[key] = int(value)  # type: ignore[arg-type]
    return result


@dataclass(frozen=True)
class LabelRecord:
    """The labels of one study, as written back to DICOM and the sidecar index."""

    study_instance_uid: str
    accession_number: str | None
    labels: Mapping[str, int]
    probabilities: Mapping[str, float]
    model: str  # "name:version"
    labelled_at: datetime
    report_id: int | None = None

    def as_output(self, record_id: str | None = None) -> dict[str, object]:
        """The classify-output shape of ARCHITECTURE.md (used by `neurolabel inspect`)."""
        return {
            "id": record_id if record_id is not None else self.study_instance_uid,
            "probabilities": {key: float(self.probabilities[key]) for key in LABEL_KEYS},
            "labels": {key: int(self.labels[key]) for key in LABEL_KEYS},
            "model": self.model,
        }
