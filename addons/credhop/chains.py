"""Links a client's follow-up request to the 3xx that sent it there.

A chain is one client's walk through redirects: hop 0 is the first request,
each 3xx expects a follow-up to its Location, which becomes the next hop.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass

from .urls import Origin


@dataclass(frozen=True, slots=True)
class ChainPosition:
    chain: str
    hop: int
    # what the previous hop knew, for telling a client's leak from a credential meant for here
    came_from: Origin | None = None
    sent: frozenset[str] = frozenset()  # fingerprints of secrets the previous request carried
    location_fp: str | None = None  # fingerprint of the credential the Location handed out
    on_leak: str = "log"
    retry: bool = False  # the same request again, after a 401 (pip retries with credentials)


class ChainTracker:
    def __init__(self, max_pending: int = 10_000, ttl: float = 120.0) -> None:
        self.max_pending = max_pending
        self.ttl = ttl
        self._pending: OrderedDict[tuple[str, str], tuple[ChainPosition, float]] = OrderedDict()

    @staticmethod
    def new_chain() -> ChainPosition:
        return ChainPosition(secrets.token_hex(6), 0)

    def expect(self, client: str, url: str, position: ChainPosition, now: float) -> None:
        """Remember that `client` should next request `url`, as hop `position`."""
        self._purge(now)
        key = (client, url)
        self._pending.pop(key, None)
        self._pending[key] = (position, now + self.ttl)
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)

    def follow(self, client: str, url: str, now: float) -> ChainPosition | None:
        """The hop this request continues, if a 3xx sent this client here."""
        self._purge(now)
        entry = self._pending.pop((client, url), None)
        return entry[0] if entry else None

    def _purge(self, now: float) -> None:
        # entries share one TTL, so insertion order is expiry order
        while self._pending:
            _, (_, expires) = next(iter(self._pending.items()))
            if expires > now:
                break
            self._pending.popitem(last=False)

    def __bool__(self) -> bool:
        return bool(self._pending)
