"""Where granted credentials live between the 3xx and the client's follow-ups.

The addon awaits a `CredentialStore`; `MemoryStore` is the embedded default, a
shared store (Redis, for a fleet) implements the same interface. `grant` is
atomic: it checks and stores in one step, so two redirects racing for the same
origin cannot both win.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .records import Why
from .urls import Origin

Clock = Callable[[], float]


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


@dataclass(frozen=True, slots=True)
class Refusal:
    why: Why
    reason: str


class StoreUnavailable(Exception):
    """The store could not answer in time; the caller must not inject on a guess."""


class CredentialStore(Protocol):
    # True only for a store whose calls never wait on I/O (they finish in the awaiting step): the
    # addon then skips the deadline it puts on every call to a store that can stall
    in_process: bool
    async def grant(self, grant: Grant) -> Refusal | None:
        """Store `grant` unless a live grant for the same client and origin, handed out by another
        issuer, holds another credential (another site must not swap a registry's token)."""

    async def get(self, client: str, origin: Origin) -> Grant | None: ...

    def may_hold(self, client: str) -> bool:
        """Cheap and synchronous: False only when nothing can be held for `client`."""

    def __len__(self) -> int: ...


class MemoryStore:
    """Grants by client, then origin. Expired grants are dropped as time passes (a heap of expiry
    times), and when full the client holding the most loses its least recently used grant, so one
    client flooding the proxy with redirects evicts only its own."""

    in_process = True  # never awaits anything: no deadline needed

    def __init__(self, max_entries: int = 10_000, max_per_client: int | None = None,
                 clock: Clock = time.time) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.max_per_client = max(1, max_per_client or min(max_entries, 1_000))
        self.clock = clock
        self._clients: dict[str, OrderedDict[Origin, Grant]] = {}
        self._expiry: list[tuple[float, int, str, Origin]] = []  # may hold stale entries; checked on pop
        self._seq = 0  # orders equal expiry times without comparing origins
        self._count = 0
        self.evicted = 0
        self.expired = 0

    def refusal(self, grant: Grant) -> Refusal | None:
        """Why `grant` would be refused, without storing it (a shared store checks its local copy first)."""
        self._expire()
        held = self._clients.get(grant.client, {}).get(grant.origin)
        if held and held.issuer != grant.issuer and held.fingerprint != grant.fingerprint:
            return Refusal(Why.SWAP_REFUSED,
                           f"{grant.origin} already holds a live credential handed out by {held.issuer}")
        return None

    async def grant(self, grant: Grant) -> Refusal | None:
        refusal = self.refusal(grant)
        if refusal:
            return refusal
        grants = self._clients.setdefault(grant.client, OrderedDict())
        held = grants.get(grant.origin)
        if held is None:
            self._count += 1
        grants.pop(grant.origin, None)
        grants[grant.origin] = grant
        self._seq += 1
        heapq.heappush(self._expiry, (grant.expires, self._seq, grant.client, grant.origin))
        while len(grants) > self.max_per_client:
            self._drop(grant.client, next(iter(grants)))
            self.evicted += 1
        while self._count > self.max_entries:
            fullest = max(self._clients, key=lambda c: len(self._clients[c]))
            self._drop(fullest, next(iter(self._clients[fullest])))
            self.evicted += 1
        return None

    async def get(self, client: str, origin: Origin) -> Grant | None:
        self._expire()
        grants = self._clients.get(client)
        grant = grants.get(origin) if grants else None
        if grant is not None:
            grants.move_to_end(origin)  # type: ignore[union-attr]
        return grant

    def may_hold(self, client: str) -> bool:
        if self._expiry and self._expiry[0][0] <= self.clock():
            self._expire()
        return client in self._clients

    def _expire(self) -> None:
        now = self.clock()
        while self._expiry and self._expiry[0][0] <= now:
            _, _, client, origin = heapq.heappop(self._expiry)
            grant = self._clients.get(client, {}).get(origin)
            if grant is not None and grant.expires <= now:
                self._drop(client, origin)
                self.expired += 1
        if len(self._expiry) > 4 * self._count + 64:  # replaced grants leave stale heap entries
            self._expiry = [(g.expires, i, c, o) for i, (c, o, g) in enumerate(
                (c, o, g) for c, gs in self._clients.items() for o, g in gs.items())]
            heapq.heapify(self._expiry)

    def _drop(self, client: str, origin: Origin) -> None:
        grants = self._clients[client]
        del grants[origin]
        self._count -= 1
        if not grants:
            del self._clients[client]

    def clear(self) -> None:
        self._clients.clear()
        self._expiry.clear()
        self._count = 0

    def __len__(self) -> int:
        self._expire()
        return self._count
