"""Where injected credentials live between the 3xx and the client's follow-ups.

The addon talks to a `CredentialStore`; the in-memory store is the default and
a shared (e.g. Redis) store can be swapped in for a fleet of proxies.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

from .urls import Origin


@dataclass(frozen=True, slots=True)
class Grant:
    """Permission to add one header to one client's requests to one origin, until `expires`."""

    client: str
    origin: Origin
    issuer: Origin  # the origin whose 3xx handed the credential out
    header: str
    value: str = field(repr=False)  # the rendered secret
    rule: str
    user: str | None
    fingerprint: str
    expires: float
    override: bool  # replace a header the client sent itself
    chain: str
    hop: int


class CredentialStore(Protocol):
    def put(self, grant: Grant) -> None: ...

    def get(self, client: str, origin: Origin, now: float) -> Grant | None: ...

    def __len__(self) -> int: ...


class MemoryStore:
    """Bounded LRU keyed by (client, origin); expired grants vanish when looked up or evicted."""

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._grants: OrderedDict[tuple[str, Origin], Grant] = OrderedDict()
        self.evicted = 0

    def put(self, grant: Grant) -> None:
        key = (grant.client, grant.origin)
        self._grants.pop(key, None)
        self._grants[key] = grant
        while len(self._grants) > self.max_entries:
            self._grants.popitem(last=False)
            self.evicted += 1

    def get(self, client: str, origin: Origin, now: float) -> Grant | None:
        key = (client, origin)
        grant = self._grants.get(key)
        if grant is None:
            return None
        if grant.expires <= now:
            del self._grants[key]
            return None
        self._grants.move_to_end(key)
        return grant

    def expire(self, now: float) -> int:
        stale = [k for k, g in self._grants.items() if g.expires <= now]
        for k in stale:
            del self._grants[k]
        return len(stale)

    def clear(self) -> None:
        self._grants.clear()

    def __len__(self) -> int:
        return len(self._grants)
