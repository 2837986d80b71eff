"""UID validation and the storage layout (pure)."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from daemon.dicom.uids import InvalidUid, instance_path, is_valid_uid, validate_uid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("1.2.840.10008.5.1.4.1.1.4", True),
        ("0", True),
        ("1.0.2", True),
        ("2.25.329800735698586629295641978511506172918", True),
        ("1" * 64, True),
        ("1" * 65, False),
        ("", False),
        ("1..2", False),
        ("1.2.", False),
        (".1.2", False),
        ("1.02", False),
        ("1.2.a", False),
        ("../../etc/passwd", False),
        ("1.2/3", False),
        ("1.2\x00", False),
        (" 1.2", False),
        (None, False),
        (12, False),
    ],
)
def test_is_valid_uid(value: object, valid: bool) -> None:
    assert is_valid_uid(value) is valid


def test_validate_uid_names_the_role() -> None:
    with pytest.raises(InvalidUid, match="Study Instance UID"):
        validate_uid("1.2.abc", "Study Instance UID")
    assert validate_uid("1.2.3", "x") == "1.2.3"


def test_instance_path_is_built_from_validated_uids_only() -> None:
    assert instance_path("1.2.3", "1.2.3.4", "1.2.3.4.5") == PurePosixPath("1.2.3/1.2.3.4/1.2.3.4.5.dcm")
    for study, series, sop in [("..", "1.2", "1.3"), ("1.2", "/etc", "1.3"), ("1.2", "1.3", "1.4/../../x")]:
        with pytest.raises(InvalidUid):
            instance_path(study, series, sop)
