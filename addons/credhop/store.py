"""Where granted credentials live between the 3xx and the client's follow-ups.

The addon awaits a `CredentialStore`; `MemoryStore` is the embedded default, a
shared store (Redis, for a fleet) implements the same interface. `grant` is
atomic: it checks and stores in one step, so two redirects racing for the same
origin cannot both win.
"""

from __future__ import annotations

import heapq
import math
import struct
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Callable, Generic, Protocol, TypeVar

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
    # addon then skips the deadline it puts on every call to a store that can stall, and calls its
    # sync half (`get_now`) on the hot path
    in_process: bool
    async def grant(self, grant: Grant) -> Refusal | None:
        """Store `grant` unless a live grant for the same client and origin, handed out by another
        issuer, holds another credential (another site must not swap a registry's token)."""

    async def get(self, client: str, origin: Origin) -> Grant | None: ...

    def may_hold(self, client: str) -> bool:
        """Cheap and synchronous: False only when nothing can be held for `client`."""

    def __len__(self) -> int: ...


class MemoryStore:
    """Grants by client, then origin, packed small: a million take about 200 bytes each when the
    clients share their registries (about 270 when every grant has an origin of its own; `make bench`).

    `get` never answers with an expired grant; it is dropped within a second of its expiry (buckets of
    one second, due times in a heap), so the count goes down as time passes. When full, the client
    holding the most loses its least recently used grant, so one client flooding the proxy with
    redirects evicts only its own.
    """

    in_process = True  # never awaits anything: no deadline needed

    def __init__(self, max_entries: int = 10_000, max_per_client: int | None = None,
                 clock: Clock = time.time) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.max_per_client = max(1, max_per_client or min(max_entries, 1_000))
        self.clock = clock
        # least recently used first; plain dicts keep order and cost a third of an OrderedDict. Keyed
        # by `_key(origin)`, one str, not by the Origin (an object and its host string, a third of a
        # grant when every grant has an origin of its own); `get` answers with the origin it was asked for
        self._clients: dict[str, dict[str, bytes]] = {}
        # origin keys granted lately, so clients sharing a registry share one key string. A bounded
        # cache, not a table of every origin held: that would cost a dict entry per grant in the worst
        # case, where no origin is shared; a key that is not in it only costs its own string
        self._keys: dict[str, str] = {}
        self._terms: _Shared[tuple[Origin, str, str, str | None, bool]] = _Shared()  # issuer, header, rule, user, override
        # whole second -> the grants due then, as client, origin key, client, origin key … (some stale)
        self._due: dict[int, list[str]] = {}
        self._due_heap: list[int] = []
        self._count = 0
        # clients by how many grants they hold, so the fullest is found without looking at every client
        self._by_size: dict[int, dict[str, None]] = {}
        self._largest = 0
        self.evicted = 0
        self.expired = 0
        # the grants last read back, with the packed form they came from: a download reads the same
        # grant again and again, and a replaced grant is a new bytes object, so a stale entry never matches
        self._read: dict[tuple[str, str], tuple[bytes, Grant]] = {}

    def refusal(self, grant: Grant) -> Refusal | None:
        """Why `grant` would be refused, without storing it (a shared store checks its local copy first)."""
        return self._refusal(grant, _key(grant.origin))

    def _refusal(self, grant: Grant, key: str) -> Refusal | None:
        self._expire()
        packed = self._clients.get(grant.client, {}).get(key)
        if packed is None:
            return None
        expires, terms = _HEAD.unpack_from(packed)[:2]
        issuer = self._terms.get(terms)[0]
        if expires <= self.clock() or issuer == grant.issuer:  # most often the same redirector again
            return None
        if self._unpack(grant.client, grant.origin, packed).fingerprint == grant.fingerprint:
            return None
        return Refusal(Why.SWAP_REFUSED, f"{grant.origin} already holds a live credential handed out by {issuer}")

    async def grant(self, grant: Grant) -> Refusal | None:
        key = _key(grant.origin)
        refusal = self._refusal(grant, key)
        if refusal:
            return refusal
        client = grant.client
        grants = self._clients.setdefault(client, {})
        terms = self._terms.add((grant.issuer, grant.header, grant.rule, grant.user, grant.override))
        shared = self._keys.get(key)
        if shared is None:
            if len(self._keys) >= MAX_KEYS:
                self._keys.clear()
            self._keys[key] = key
        else:
            key = shared
        old = grants.pop(key, None)
        if old is None:
            self._count += 1
            self._resized(client, len(grants), len(grants) + 1)
        else:  # a fresh grant for a held origin takes the old one's place (its expiry entry goes stale)
            self._terms.release(_terms_of(old))
            self._read.pop((client, key), None)
        grants[key] = _pack(grant, terms)  # most recently used last
        due = math.ceil(grant.expires)
        bucket = self._due.get(due)
        if bucket is None:
            bucket = self._due[due] = []
            heapq.heappush(self._due_heap, due)
        bucket += (client, key)
        while len(grants) > self.max_per_client:
            self._drop(client, next(iter(grants)))
            self.evicted += 1
        while self._count > self.max_entries:
            fullest = next(iter(self._by_size[self._largest]))
            self._drop(fullest, next(iter(self._clients[fullest])))
            self.evicted += 1
        return None

    async def get(self, client: str, origin: Origin) -> Grant | None:
        return self.get_now(client, origin)

    def get_now(self, client: str, origin: Origin) -> Grant | None:
        """`get` without a coroutine: the hot path calls this for a store in this process."""
        grants = self._clients.get(client)
        if not grants:
            return None
        key = _key(origin)
        packed = grants.get(key)
        if packed is None:
            return None
        if _expires(packed) <= self.clock():
            self._expire()
            return None
        del grants[key]
        grants[key] = packed  # most recently used last
        read = self._read.get((client, key))
        if read is not None and read[0] is packed:
            return read[1]
        grant = self._unpack(client, origin, packed)  # the origin asked for: equal to the one granted
        if len(self._read) >= MAX_READ:
            self._read.clear()
        self._read[client, key] = (packed, grant)
        return grant

    def may_hold(self, client: str) -> bool:
        if self._due_heap and self._due_heap[0] <= self.clock():
            self._expire()
        return client in self._clients

    def _expire(self) -> None:
        now = self.clock()
        while self._due_heap and self._due_heap[0] <= now:
            bucket = self._due.pop(heapq.heappop(self._due_heap))
            for client, key in zip(bucket[::2], bucket[1::2]):
                packed = self._clients.get(client, {}).get(key)
                # a grant replaced or evicted since leaves its entry here: only a grant that is due goes
                if packed is not None and _expires(packed) <= now:
                    self._drop(client, key)
                    self.expired += 1

    def _drop(self, client: str, key: str) -> None:
        grants = self._clients[client]
        packed = grants.pop(key)
        self._read.pop((client, key), None)  # a grant that is gone is not kept, not even read back
        self._terms.release(_terms_of(packed))
        self._count -= 1
        self._resized(client, len(grants) + 1, len(grants))
        if not grants:
            del self._clients[client]

    def _resized(self, client: str, old: int, new: int) -> None:
        if old:
            clients = self._by_size[old]
            del clients[client]
            if not clients:
                del self._by_size[old]
        if new:
            self._by_size.setdefault(new, {})[client] = None
        if new > self._largest:
            self._largest = new
        while self._largest and self._largest not in self._by_size:
            self._largest -= 1

    def _unpack(self, client: str, origin: Origin, packed: bytes) -> Grant:
        expires, terms, hop, fp_len, chain_len = _HEAD.unpack_from(packed)
        issuer, header, rule, user, override = self._terms.get(terms)
        text = packed[_HEAD.size:].decode("utf-8", "surrogatepass")
        value_end = len(text) - fp_len - chain_len
        return Grant(client, origin, issuer, header, text[:value_end], rule, user,
                     text[value_end:value_end + fp_len], expires, override, text[value_end + fp_len:], hop)

    def clear(self) -> None:
        self._clients.clear()
        self._read.clear()
        self._keys.clear()
        self._terms = _Shared()
        self._due.clear()
        self._due_heap.clear()
        self._count = 0
        self._by_size.clear()
        self._largest = 0

    def __len__(self) -> int:
        self._expire()
        return self._count


def _key(origin: Origin) -> str:
    """One str per origin, distinct for distinct origins whatever their text: the scheme goes with its
    length, and the port's digits (no colon in them) end at the colon before the host."""
    return f"{len(origin.scheme)}:{origin.scheme}{origin.port}:{origin.host}"


# A held grant in one bytes object (no per-object overhead for its parts): expiry, the number of
# its shared terms, hop, the lengths of fingerprint and chain id, then value + fingerprint + chain
# as UTF-8 (surrogatepass: mitmproxy hands undecodable header bytes over as lone surrogates).
_HEAD = struct.Struct("<dIIHH")
MAX_READ = 1_024  # grants kept as read back (see MemoryStore.get)
MAX_KEYS = 16_384  # origin keys kept for sharing (see MemoryStore._keys)


def _pack(grant: Grant, terms: int) -> bytes:
    return _HEAD.pack(grant.expires, terms, grant.hop, len(grant.fingerprint), len(grant.chain)) + (
        grant.value + grant.fingerprint + grant.chain).encode("utf-8", "surrogatepass")


def _expires(packed: bytes) -> float:
    return _HEAD.unpack_from(packed)[0]  # type: ignore[no-any-return]


def _terms_of(packed: bytes) -> int:
    return _HEAD.unpack_from(packed)[1]  # type: ignore[no-any-return]


H = TypeVar("H", bound=Hashable)


class _Shared(Generic[H]):
    """Equal values kept once, by number, with a count of the grants using each; a value goes
    when its count reaches zero, so what a hostile client makes up cannot pile up."""

    def __init__(self) -> None:
        self._numbers: dict[H, int] = {}
        self._values: list[H | None] = []
        self._uses: list[int] = []
        self._free: list[int] = []

    def add(self, value: H) -> int:
        number = self._numbers.get(value)
        if number is None:
            if self._free:
                number = self._free.pop()
                self._values[number] = value
            else:
                number = len(self._values)
                self._values.append(value)
                self._uses.append(0)
            self._numbers[value] = number
        self._uses[number] += 1
        return number

    def get(self, number: int) -> H:
        value = self._values[number]
        assert value is not None
        return value

    def number(self, value: H) -> int:
        return self._numbers[value]

    def release(self, number: int) -> None:
        self._uses[number] -= 1
        if not self._uses[number]:
            del self._numbers[self._values[number]]  # type: ignore[index]
            self._values[number] = None
            self._free.append(number)

    def __len__(self) -> int:
        return len(self._numbers)
