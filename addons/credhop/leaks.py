"""Secrets a request carries, and telling a client's leak from a credential meant for where it goes.

A leak is a client re-sending, after a redirect, a secret it sent to the
previous origin to a different one (requests CVE-2018-18074, curl
CVE-2022-27776, urllib3 CVE-2023-43804). A credential the Location itself
handed out for the new origin is not a leak.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from .credentials import Fingerprinter, credential_from_header
from .pending import ChainPosition
from .records import LeakKind
from .urls import Origin


@dataclass(frozen=True, slots=True)
class SentSecret:
    header: str  # lower-case name
    scheme: str | None  # Basic, Bearer, ... for authorization headers
    fingerprint: str
    injected: bool  # put there by credhop, not by the client

    def as_record(self) -> dict[str, Any]:
        return {"header": self.header, "scheme": self.scheme, "fingerprint": self.fingerprint,
                "injected": self.injected}


@dataclass(frozen=True, slots=True)
class Leak:
    header: str
    fingerprint: str
    kind: LeakKind


@dataclass(frozen=True, slots=True)
class Injected:
    """A header credhop added, and how it reads as a sent secret (worked out once per grant)."""

    value: str = field(repr=False)
    secret: SentSecret


def secrets_sent(headers: Iterable[tuple[str, str]], names: frozenset[str], fingerprint: Fingerprinter,
                 injected: Injected | None = None) -> list[SentSecret]:
    """Every secret-bearing header; `injected` is credhop's own."""
    out = []
    for name, value in headers:
        lname = name.lower()
        if lname not in names:
            continue
        if injected is not None and lname == injected.secret.header and value == injected.value:
            out.append(injected.secret)
            continue
        scheme, credential = credential_from_header(lname, value)
        out.append(SentSecret(lname, scheme, fingerprint(credential), False))
    return out


def as_injected(header: str, value: str, fingerprint: Fingerprinter) -> Injected:
    scheme, credential = credential_from_header(header, value)
    return Injected(value, SentSecret(header.lower(), scheme, fingerprint(credential), True))


def leak_kind(came_from: Origin, origin: Origin) -> LeakKind:
    if came_from.scheme == "https" and origin.scheme == "http":
        return LeakKind.SCHEME_DOWNGRADE
    if came_from.host != origin.host:
        return LeakKind.OTHER_HOST
    if came_from.port != origin.port:
        return LeakKind.OTHER_PORT
    return LeakKind.OTHER_SCHEME


def _site(host: str) -> str:
    """The last two labels of a name: cookies may be shared within it (no public-suffix list here)."""
    return ".".join(host.rstrip(".").split(".")[-2:]) if any(c.isalpha() for c in host) else host


def _allowed(header: str, came_from: Origin, origin: Origin) -> bool:
    """Re-sending that browsers and careful clients do on purpose."""
    if came_from.host == origin.host and came_from.scheme == "http" and origin.scheme == "https":
        return True  # an upgrade to TLS on the same host
    # cookies are scoped by host or domain, not by scheme or port
    return header == "cookie" and _site(came_from.host) == _site(origin.host)


def find_leaks(sent: list[SentSecret], position: ChainPosition, origin: Origin) -> list[Leak]:
    came_from = position.came_from
    if came_from is None or came_from == origin:
        return []
    kind = leak_kind(came_from, origin)
    return [
        Leak(s.header, s.fingerprint, kind)
        for s in sent
        if not s.injected and s.fingerprint in position.sent and s.fingerprint != position.location_fp
        and not _allowed(s.header, came_from, origin)
    ]
