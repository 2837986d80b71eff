"""Who may associate: called AE title, calling AE allowlist (optionally bound to a host), association limit,
and the TLS context. The decision is pure; the SCP applies it when an A-ASSOCIATE-RQ arrives.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from daemon.config import TlsConfig

# A-ASSOCIATE-RJ result, source and reason (PS3.8 section 9.3.4).
REJECTED_PERMANENT = 0x01
REJECTED_TRANSIENT = 0x02
SOURCE_SERVICE_USER = 0x01
SOURCE_PROVIDER_PRESENTATION = 0x03
REASON_CALLING_AE_NOT_RECOGNIZED = 0x03
REASON_CALLED_AE_NOT_RECOGNIZED = 0x07
REASON_LOCAL_LIMIT_EXCEEDED = 0x02


@dataclass(frozen=True)
class AllowedCaller:
    """One [dicom] allowed_calling_aes entry: "AE" (from anywhere) or "AE@host" (host name or address)."""

    ae_title: str
    host: str | None = None

    @classmethod
    def parse(cls, text: str) -> AllowedCaller:
        title, _, host = text.partition("@")
        return cls(title.strip(), host.strip() or None)


@dataclass(frozen=True)
class Rejection:
    result: int
    source: int
    reason: int
    explanation: str


@dataclass(frozen=True)
class AssociationPolicy:
    ae_title: str
    allowed_callers: tuple[AllowedCaller, ...]
    max_associations: int

    @classmethod
    def from_config(cls, ae_title: str, allowed: Sequence[str], max_associations: int) -> AssociationPolicy:
        return cls(ae_title, tuple(AllowedCaller.parse(entry) for entry in allowed), max_associations)


def decide(
    policy: AssociationPolicy,
    *,
    called_ae: str,
    calling_ae: str,
    peer_addresses: frozenset[str],
    active_associations: int,
) -> Rejection | None:
    """None to accept; otherwise the A-ASSOCIATE-RJ to send. `peer_addresses` are the peer's address and names."""
    if called_ae.strip() != policy.ae_title:
        return Rejection(REJECTED_PERMANENT, SOURCE_SERVICE_USER, REASON_CALLED_AE_NOT_RECOGNIZED,
                         "called AE title is not ours")
    if policy.allowed_callers and not any(
        caller.ae_title == calling_ae.strip() and (caller.host is None or caller.host in peer_addresses)
        for caller in policy.allowed_callers
    ):
        return Rejection(REJECTED_PERMANENT, SOURCE_SERVICE_USER, REASON_CALLING_AE_NOT_RECOGNIZED,
                         "calling AE title not allowed from this host")
    if active_associations > policy.max_associations:
        return Rejection(REJECTED_TRANSIENT, SOURCE_PROVIDER_PRESENTATION, REASON_LOCAL_LIMIT_EXCEEDED,
                         "too many concurrent associations")
    return None


def needs_host_names(policy: AssociationPolicy) -> bool:
    """True when an allowlist entry names a host that is not an IP address (then the peer must be resolved)."""
    return any(caller.host is not None and not _is_address(caller.host) for caller in policy.allowed_callers)


def peer_names(address: str, resolve: bool) -> frozenset[str]:
    """The peer's address, plus its reverse-resolved host name when `resolve` (allowlist entries name hosts)."""
    names = {address}
    try:
        names.add(str(ipaddress.ip_address(address)))
    except ValueError:
        pass
    if resolve:
        try:
            host, aliases, _ = socket.gethostbyaddr(address)
            names.update([host, *aliases])
        except OSError:
            pass
    return frozenset(names)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """The TLS context of the listener, or None for plain TCP. TLS 1.2 or newer (BCP 195)."""
    if not tls.enabled:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=tls.cert, keyfile=tls.key)
    if tls.ca:
        context.load_verify_locations(cafile=tls.ca)
    if tls.require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
    else:  # a client certificate, when one is presented, is verified against `ca`
        context.verify_mode = ssl.CERT_OPTIONAL if tls.ca else ssl.CERT_NONE
    return context
