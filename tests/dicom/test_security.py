"""Association policy (pure): called AE, calling AE allowlist with hosts, association limit."""

from __future__ import annotations

import pytest

from daemon.dicom.security import (
    REASON_CALLED_AE_NOT_RECOGNIZED,
    REASON_CALLING_AE_NOT_RECOGNIZED,
    REASON_LOCAL_LIMIT_EXCEEDED,
    REJECTED_PERMANENT,
    REJECTED_TRANSIENT,
    AllowedCaller,
    AssociationPolicy,
    decide,
    needs_host_names,
    peer_names,
)

OPEN = AssociationPolicy.from_config("NEUROLABEL", [], 4)
LISTED = AssociationPolicy.from_config("NEUROLABEL", ["MRI1", "PACS@10.0.0.5", "CT@ct.example.org"], 4)


@pytest.mark.parametrize(
    ("policy", "called", "calling", "peer", "active", "reason"),
    [
        (OPEN, "NEUROLABEL", "ANY", {"127.0.0.1"}, 1, None),
        (OPEN, "NEUROLABEL  ", "ANY", {"127.0.0.1"}, 4, None),
        (OPEN, "OTHER", "ANY", {"127.0.0.1"}, 1, REASON_CALLED_AE_NOT_RECOGNIZED),
        (OPEN, "NEUROLABEL", "ANY", {"127.0.0.1"}, 5, REASON_LOCAL_LIMIT_EXCEEDED),
        (LISTED, "NEUROLABEL", "MRI1", {"192.168.1.9"}, 1, None),
        (LISTED, "NEUROLABEL", "PACS", {"10.0.0.5"}, 1, None),
        (LISTED, "NEUROLABEL", "PACS", {"10.0.0.6"}, 1, REASON_CALLING_AE_NOT_RECOGNIZED),
        (LISTED, "NEUROLABEL", "CT", {"10.0.0.7", "ct.example.org"}, 1, None),
        (LISTED, "NEUROLABEL", "CT", {"10.0.0.7"}, 1, REASON_CALLING_AE_NOT_RECOGNIZED),
        (LISTED, "NEUROLABEL", "UNKNOWN", {"10.0.0.5"}, 1, REASON_CALLING_AE_NOT_RECOGNIZED),
        (LISTED, "OTHER", "MRI1", {"10.0.0.5"}, 1, REASON_CALLED_AE_NOT_RECOGNIZED),
    ],
)
def test_decide(
    policy: AssociationPolicy, called: str, calling: str, peer: set[str], active: int, reason: int | None
) -> None:
    rejection = decide(policy, called_ae=called, calling_ae=calling, peer_addresses=frozenset(peer),
                       active_associations=active)
    if reason is None:
        assert rejection is None
    else:
        assert rejection is not None and rejection.reason == reason
        expected = REJECTED_TRANSIENT if reason == REASON_LOCAL_LIMIT_EXCEEDED else REJECTED_PERMANENT
        assert rejection.result == expected


def test_allowlist_entries_parse() -> None:
    assert AllowedCaller.parse("MRI1") == AllowedCaller("MRI1", None)
    assert AllowedCaller.parse("PACS@10.0.0.5") == AllowedCaller("PACS", "10.0.0.5")


def test_host_names_are_resolved_only_when_an_entry_names_one() -> None:
    assert needs_host_names(LISTED)
    assert not needs_host_names(AssociationPolicy.from_config("NEUROLABEL", ["A@10.0.0.1", "B@::1", "C"], 1))
    assert peer_names("127.0.0.1", resolve=False) == frozenset({"127.0.0.1"})
    assert "127.0.0.1" in peer_names("127.0.0.1", resolve=True)
