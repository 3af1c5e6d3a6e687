"""Links a client's follow-up request to the 3xx that sent it there.

A chain is one client's walk through redirects: hop 0 is the first request,
each 3xx expects a follow-up to its Location, which becomes the next hop.
"""

from __future__ import annotations

import secrets
from collections import Counter, OrderedDict, deque
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
    """Pending follow-ups by (client, URL); one client may await the same URL in several chains."""

    def __init__(self, max_pending: int = 10_000, ttl: float = 120.0) -> None:
        self.max_pending = max_pending
        self.ttl = ttl
        self._pending: OrderedDict[tuple[str, str], deque[tuple[ChainPosition, float]]] = OrderedDict()
        self._per_client: Counter[str] = Counter()  # lets requests of other clients skip URL parsing
        self._count = 0

    @staticmethod
    def new_chain() -> ChainPosition:
        return ChainPosition(secrets.token_hex(6), 0)

    def awaits(self, client: str) -> bool:
        """Whether any follow-up of `client` is pending (cheap: no URL needed)."""
        return self._per_client[client] > 0

    def expect(self, client: str, url: str, position: ChainPosition, now: float) -> None:
        """Remember that `client` should next request `url`, as hop `position`."""
        self._purge(now)
        key = (client, url)
        queue = self._pending.pop(key, None) or deque()
        queue.append((position, now + self.ttl))
        self._pending[key] = queue  # most recently touched last, so the front expires first
        self._per_client[client] += 1
        self._count += 1
        while self._count > self.max_pending:
            self._take(*next(iter(self._pending.items())))

    def follow(self, client: str, url: str, now: float) -> ChainPosition | None:
        """The hop this request continues, if a 3xx sent this client here (oldest first)."""
        self._purge(now)
        key = (client, url)
        while key in self._pending:
            position, expires = self._take(key, self._pending[key])
            if expires > now:  # a touched queue moves to the back with its old entries
                return position
        return None

    def _take(self, key: tuple[str, str], queue: deque[tuple[ChainPosition, float]]) -> tuple[ChainPosition, float]:
        """Remove and return the oldest entry of `key`'s queue, keeping the counts right."""
        entry = queue.popleft()
        if not queue:
            del self._pending[key]
        self._count -= 1
        self._per_client[key[0]] -= 1
        if not self._per_client[key[0]]:
            del self._per_client[key[0]]
        return entry

    def _purge(self, now: float) -> None:
        # entries share one TTL and queues move to the back when touched: the front expires first
        while self._pending:
            key, queue = next(iter(self._pending.items()))
            if queue[0][1] > now:
                break
            self._take(key, queue)

    def __bool__(self) -> bool:
        return bool(self._pending)
