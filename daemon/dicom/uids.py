"""DICOM UIDs: validation, and the storage layout built only from validated UIDs (pure).

A UID (PS3.5 section 9.1) is 1 to 64 characters: numeric components separated
by single dots, each component without a leading zero unless it is "0". That
alphabet cannot name a parent directory, an absolute path or a hidden file, so
a layout of validated UIDs is safe to join under the storage root.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

MAX_UID_LENGTH = 64
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
FILE_SUFFIX = ".dcm"


class InvalidUid(ValueError):
    """A UID that is not a valid DICOM UID; `role` says which (e.g. "SOP Instance UID")."""

    def __init__(self, role: str, value: object) -> None:
        shown = repr(value)[:80]
        super().__init__(f"{role} is not a valid DICOM UID: {shown}")
        self.role = role


def is_valid_uid(value: object) -> bool:
    """True for a string that is a valid DICOM UID (trailing NUL padding already stripped by the reader)."""
    return isinstance(value, str) and 0 < len(value) <= MAX_UID_LENGTH and _UID.fullmatch(value) is not None


def validate_uid(value: object, role: str) -> str:
    """The UID itself, or InvalidUid naming its `role`."""
    if not is_valid_uid(value):
        raise InvalidUid(role, value)
    assert isinstance(value, str)
    return value


def instance_path(study_uid: str, series_uid: str, sop_instance_uid: str) -> PurePosixPath:
    """Where an instance lives, relative to the storage root: <study>/<series>/<sop instance>.dcm."""
    parts = (
        validate_uid(study_uid, "Study Instance UID"),
        validate_uid(series_uid, "Series Instance UID"),
        validate_uid(sop_instance_uid, "SOP Instance UID"),
    )
    return PurePosixPath(parts[0], parts[1], parts[2] + FILE_SUFFIX)
