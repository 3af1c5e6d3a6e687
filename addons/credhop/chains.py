"""Links a client's follow-up request to the 3xx that sent it there.

A chain is one client's walk through redirects: hop 0 is the first request,
each 3xx expects a follow-up to its Location, which becomes the next hop.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChainPosition:
    chain: str
    hop: int


class ChainTracker:
    def __init__(self, max_pending: int = 10_000, ttl: float = 120.0) -> None:
        self.max_pending = max_pending
        self.ttl = ttl
        self._pending: OrderedDict[tuple[str, str], tuple[ChainPosition, float]] = OrderedDict()

    @staticmethod
    def new_chain() -> ChainPosition:
        return ChainPosition(secrets.token_hex(6), 0)

    def expect(self, client: str, url: str, after: ChainPosition, now: float) -> ChainPosition:
        """Remember that `client` should next request `url`; return the hop it will be."""
        nxt = ChainPosition(after.chain, after.hop + 1)
        key = (client, url)
        self._pending.pop(key, None)
        self._pending[key] = (nxt, now + self.ttl)
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
        return nxt

    def follow(self, client: str, url: str, now: float) -> ChainPosition | None:
        """The hop this request continues, if a 3xx sent this client here."""
        entry = self._pending.pop((client, url), None)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    def __bool__(self) -> bool:
        return bool(self._pending)
