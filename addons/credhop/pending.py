"""Follow-ups a client owes: links a request to the 3xx that sent the client there.

A chain is one client's walk through redirects: hop 0 is the first request,
each 3xx expects a follow-up to its Location, which becomes the next hop. The
addon awaits a `PendingFollowUps`; `MemoryPending` is the embedded default.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, replace
from typing import Protocol

from .records import Action
from .store import Clock
from .urls import Origin


@dataclass(frozen=True, slots=True)
class ChainPosition:
    chain: str
    hop: int
    # what the previous hop knew, for telling a client's leak from a credential meant for here
    came_from: Origin | None = None
    sent: frozenset[str] = frozenset()  # fingerprints of secrets the previous request carried
    location_fp: str | None = None  # fingerprint of the credential the Location handed out
    on_leak: Action = Action.LOG
    retry: bool = False  # the same request again, after a 401 (pip retries with credentials)


def new_chain() -> ChainPosition:
    return ChainPosition(secrets.token_hex(8), 0)  # 64 random bits: unique across a fleet, no coordination


class PendingFollowUps(Protocol):
    in_process: bool  # as CredentialStore.in_process: calls never wait on I/O; then `*_now` exist too

    async def expect(self, client: str, url: str, origin: Origin, position: ChainPosition) -> None:
        """Remember that `client` should next request `url` (normalised) on `origin`, as hop `position`."""

    async def follow(self, client: str, url: str) -> ChainPosition | None:
        """The hop this request continues, if a 3xx sent this client here (oldest first); taken once."""

    async def watching(self, client: str, origin: Origin) -> ChainPosition | None:
        """For leak detection whatever URL the client asks for: the latest redirect of `client` to
        `origin`, with the secrets of every such redirect. Not taken: any request there is checked."""

    def awaits(self, client: str) -> bool:
        """Cheap and synchronous: False only when nothing is pending or watched for `client`."""

    def __len__(self) -> int: ...


class MemoryPending:
    """Pending follow-ups by (client, URL); one client may await the same URL in several chains.
    Entries share one TTL, so the least recently touched queue expires first."""

    in_process = True  # never awaits anything: no deadline needed

    def __init__(self, max_pending: int = 10_000, ttl: float = 120.0, clock: Clock = time.time) -> None:
        self.max_pending, self.ttl, self.clock = max_pending, ttl, clock
        self._pending: OrderedDict[tuple[str, str], deque[tuple[ChainPosition, float]]] = OrderedDict()
        self._per_client: Counter[str] = Counter()  # lets requests of other clients skip URL parsing
        self._count = 0
        self._watches: OrderedDict[tuple[str, Origin], tuple[ChainPosition, float]] = OrderedDict()
        self._watched: Counter[str] = Counter()

    def awaits(self, client: str) -> bool:
        return client in self._per_client or client in self._watched  # (a count that reaches 0 is deleted)

    # the `*_now` methods answer without a coroutine: the hot path calls them for pending follow-ups
    # held in this process; the async ones are the `PendingFollowUps` interface

    async def expect(self, client: str, url: str, origin: Origin, position: ChainPosition) -> None:
        self.expect_now(client, url, origin, position)

    async def follow(self, client: str, url: str) -> ChainPosition | None:
        return self.follow_now(client, url)

    async def watching(self, client: str, origin: Origin) -> ChainPosition | None:
        return self.watching_now(client, origin)

    def expect_now(self, client: str, url: str, origin: Origin, position: ChainPosition) -> None:
        now = self.clock()
        self._purge(now)
        if position.sent and position.came_from != origin:  # else the client has nothing to leak there
            self._watch(client, origin, position, now)
        key = (client, url)
        queue = self._pending.pop(key, None) or deque()
        queue.append((position, now + self.ttl))
        self._pending[key] = queue  # most recently touched last, so the front expires first
        self._per_client[client] += 1
        self._count += 1
        while self._count > self.max_pending:
            self._take(*next(iter(self._pending.items())))

    def follow_now(self, client: str, url: str) -> ChainPosition | None:
        now = self.clock()
        self._purge(now)
        key = (client, url)
        while key in self._pending:
            position, expires = self._take(key, self._pending[key])
            if expires > now:  # a touched queue moves to the back with its old entries
                return position
        return None

    def watching_now(self, client: str, origin: Origin) -> ChainPosition | None:
        self._purge(self.clock())
        entry = self._watches.get((client, origin))
        return entry[0] if entry else None

    def _watch(self, client: str, origin: Origin, position: ChainPosition, now: float) -> None:
        key = (client, origin)
        old = self._watches.pop(key, None)
        if old is None:
            self._watched[client] += 1
        else:  # several redirects to one origin: watch for all their secrets, strip if any rule says so
            prev = old[0]
            position = replace(position, sent=position.sent | prev.sent,
                               on_leak=Action.STRIP if Action.STRIP in (prev.on_leak, position.on_leak) else position.on_leak)
        self._watches[key] = (position, now + self.ttl)
        while len(self._watches) > self.max_pending:
            self._unwatch(next(iter(self._watches)))

    def _unwatch(self, key: tuple[str, Origin]) -> None:
        del self._watches[key]
        self._watched[key[0]] -= 1
        if not self._watched[key[0]]:
            del self._watched[key[0]]

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
        while self._pending:
            key, queue = next(iter(self._pending.items()))
            if queue[0][1] > now:
                break
            self._take(key, queue)
        while self._watches:
            wkey, (_, expires) = next(iter(self._watches.items()))
            if expires > now:
                break
            self._unwatch(wkey)

    def __len__(self) -> int:
        self._purge(self.clock())
        return self._count


class PlainRedirects:
    """Plain 3xx responses set aside (`credhop_plain_redirects=failed`): one that cannot start a
    credential hop is recorded only when its chain needs explaining, that is when its follow-up
    fails, gets no answer or is redirected again (hop.Hops). Kept by client and the `follow_key` of
    the request that follows it; in this process only, bounded in number and time. An entry is what
    the caller keeps of the 3xx (hop.AsideRedirect, its records are built from it later) and when it
    came."""

    def __init__(self, max_entries: int = 4_096, ttl: float = 60.0, clock: Clock = time.time) -> None:
        self.max_entries, self.ttl, self.clock = max_entries, ttl, clock
        self._entries: OrderedDict[tuple[str, str], tuple[object, float]] = OrderedDict()
        self._per_client: Counter[str] = Counter()

    def __contains__(self, client: str) -> bool:
        return client in self._per_client

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, client: str, key: str, flow: object) -> None:
        now = self.clock()
        entry = (client, key)
        if self._entries.pop(entry, None) is None:  # the same target again: the newest 3xx counts
            self._per_client[client] += 1
        self._entries[entry] = (flow, now)
        while len(self._entries) > self.max_entries or self._expired(now):
            self._drop(next(iter(self._entries)))

    def take(self, client: str, key: str) -> tuple[object, float] | None:
        """The 3xx this request follows, with when it came; taken once."""
        now = self.clock()
        while self._expired(now):
            self._drop(next(iter(self._entries)))
        found = self._entries.get((client, key))
        if found is not None:
            self._drop((client, key))
        return found

    def _expired(self, now: float) -> bool:
        return bool(self._entries) and next(iter(self._entries.values()))[1] + self.ttl <= now

    def _drop(self, entry: tuple[str, str]) -> None:
        del self._entries[entry]
        self._per_client[entry[0]] -= 1
        if not self._per_client[entry[0]]:
            del self._per_client[entry[0]]
