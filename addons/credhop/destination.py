"""Where a request really goes, when the proxy only knows an address (transparent mode).

In transparent mode mitmproxy knows the connection's original destination
address (SO_ORIGINAL_DST), not the name the client asked for: `request.host`
is `10.10.9.20`, while the grant credhop holds is for `https://index.corp.test`.
The client says a name three ways (the `Host` header or HTTP/2 `:authority`, and
the TLS SNI), and can forge every one of them. So a name counts only when it
resolves, on the proxy, to the very address the connection goes to; otherwise
the destination stays the bare address, and a credential held for a name is not
sent there.

No mitmproxy here: `verified_origin` takes the mode, the address, the names the
client gave and a resolver. `Resolver` is the proxy's own name lookup with a
deadline (a hook awaiting DNS stalls that request, and mitmproxy runs no timeout
of its own) and a short cache.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .urls import Origin

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Lookup = Callable[[str], Awaitable[frozenset[IPAddress]]]

DEADLINE = 0.5  # seconds for one name lookup
POSITIVE_TTL = 30.0  # seconds an answer is reused
NEGATIVE_TTL = 5.0  # seconds a failed or late answer is reused
MAX_CACHED = 4096
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The destination origin and, for logs, how it was found."""

    origin: Origin
    how: str  # "request" (mitmproxy's host, as always), "verified" (a name resolved to the address),
    # "address" (no name given, or it did not resolve to the address), "conflict" (the client gave
    # different names, or one that is no host name or names another port)


def ip(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def host_name(candidate: str | None, port: int) -> str | None:
    """The host part of a `Host` value, `:authority` or SNI, lower-cased; None when it is empty,
    not a DNS name or IP literal, or names a port other than `port` (the port the connection
    really goes to)."""
    if not candidate:
        return None
    text = candidate.strip().lower()
    if text.startswith("["):  # [v6]:port
        host, _, rest = text[1:].partition("]")
        if rest and rest != f":{port}":
            return None
        return host if ip(host) else None
    host, sep, given = text.partition(":")
    if sep:
        if given != str(port) or ":" in given:
            return None
    if ip(host):
        return host
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        return None
    return host


def request_origin(scheme: str, host: str, port: int) -> Origin:
    """Outside transparent mode, `host` is what the proxy itself connects to: the origin, as it is."""
    return Origin(scheme, host.lower(), port)


async def verified_origin(transparent: bool, scheme: str, host: str, port: int, names: Iterable[str | None],
                          resolve: Lookup, original: tuple[str, int] | None = None) -> Verdict:
    """The origin a request to `host`:`port` goes to.

    Not transparent (regular, upstream, reverse … modes): `host` is what the proxy itself connects
    to, so it is the origin, exactly as before. Transparent, with `host` the connection's original
    destination address (`original`, as mitmproxy recovered it): the one name the client gave
    (`names`: Host/`:authority`, SNI; every one given must be usable, name no other port, and
    agree) if the proxy resolves it to that address, else the address itself.
    """
    as_given = request_origin(scheme, host, port)
    if not transparent:
        return Verdict(as_given, "request")
    address = ip(host)
    if address is None:
        return Verdict(as_given, "request")
    if original is None or ip(str(original[0])) != address or int(original[1]) != port:
        return Verdict(as_given, "address")  # sent elsewhere than the original destination
    stated = [c for c in names if c]
    given = {host_name(c, port) for c in stated}
    if not stated:
        return Verdict(as_given, "address")
    if None in given or len({n.rstrip(".") for n in given if n}) > 1:
        return Verdict(as_given, "conflict")  # another port, an unusable name, or names that differ
    name = sorted(n for n in given if n)[0]  # "name" and "name." are one name; either spelling is the client's
    literal = ip(name)
    if literal is not None:
        return Verdict(as_given, "address")  # an address literal adds nothing (it is the address, or it lies)
    if address in await resolve(name.rstrip(".")):
        return Verdict(Origin(scheme, name, port), "verified")
    return Verdict(as_given, "address")


class Resolver:
    """The proxy's own name lookups (`getaddrinfo`), each under a deadline, answers cached briefly.

    A lookup that fails or misses its deadline counts as "resolves to nothing" (so no name is
    verified and nothing is injected), and is cached for a shorter time. Concurrent lookups of one
    name share a single query.
    """

    def __init__(self, deadline: float = DEADLINE, ttl: float = POSITIVE_TTL, negative_ttl: float = NEGATIVE_TTL,
                 max_cached: int = MAX_CACHED, clock: Callable[[], float] = time.monotonic,
                 getaddrinfo: Callable[..., Awaitable[list[Any]]] | None = None) -> None:
        self.deadline, self.ttl, self.negative_ttl, self.max_cached = deadline, ttl, negative_ttl, max_cached
        self.clock = clock
        self.getaddrinfo = getaddrinfo  # None: the running loop's (getaddrinfo(3) in a worker thread)
        self.failures = 0  # lookups that failed or were late
        self._cache: OrderedDict[str, tuple[float, frozenset[IPAddress]]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[frozenset[IPAddress]]] = {}

    async def __call__(self, name: str) -> frozenset[IPAddress]:
        name = name.lower()
        now = self.clock()
        cached = self._cache.get(name)
        if cached and cached[0] > now:
            self._cache.move_to_end(name)
            return cached[1]
        future = self._inflight.get(name)
        if future is None:
            future = self._inflight[name] = asyncio.ensure_future(self._lookup(name))
            future.add_done_callback(lambda _: self._inflight.pop(name, None))
        return await asyncio.shield(future)

    async def _lookup(self, name: str) -> frozenset[IPAddress]:
        getaddrinfo = self.getaddrinfo or asyncio.get_running_loop().getaddrinfo
        try:
            infos = await asyncio.wait_for(getaddrinfo(name, None, type=socket.SOCK_STREAM), self.deadline)
            found = frozenset(a for a in (ip(str(info[4][0]).split("%")[0]) for info in infos) if a is not None)
        except (asyncio.TimeoutError, OSError, UnicodeError, ValueError):
            found = frozenset()
        if not found:
            self.failures += 1
        self._cache[name] = (self.clock() + (self.ttl if found else self.negative_ttl), found)
        self._cache.move_to_end(name)
        while len(self._cache) > self.max_cached:
            self._cache.popitem(last=False)
        return found
