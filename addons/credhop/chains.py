"""Reading a hop log and building chains: parses the JSON lines (skipping odd ones), checks every field
before use, and groups the records of a chain into its hops (`Hop`): the walk through the redirects, the
later same-origin requests that reused a credential, and presigned downloads split off as chains of their
own. It judges nothing; `checks` does.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlsplit

from .findings import Finding, severity_rank
from .records import EVENTS, Action, Event, Why
from .signed import signed_url_kind
from .urls import DEFAULT_PORTS, LocationError, normalize_url, parse_location


@dataclass(frozen=True, slots=True)
class Sent:
    """A secret a request carried, as the log names it (never the value)."""

    header: str
    scheme: str | None
    fingerprint: str | None
    injected: bool

    def label(self) -> str:
        scheme = f" ({self.scheme})" if self.scheme else ""
        return f"{self.header}{scheme} {self.fingerprint or '?'}"


@dataclass(slots=True)
class Hop:
    """One request of a chain, with everything the log says about it."""

    index: int  # hop number: 0 is the first request, n+1 the follow-up of hop n's redirect
    method: str
    url: str
    ts: float
    flow: str | None = None
    status: int | None = None
    redirect: bool = False  # a `redirect` record: status is a 3xx with the fields below
    location: str | None = None
    resolved: str | None = None  # the URL the Location sends the client to (no userinfo), if it parses
    target: str | None = None
    relative: bool = False
    action: str | None = None
    rule: str | None = None
    reason: str | None = None
    why: str | None = None  # the stable code of `reason` (see why_of)
    user: str | None = None
    fingerprint: str | None = None  # of the credential in the Location
    ttl: float | None = None
    observe: bool = False
    sent: list[Sent] = field(default_factory=list)
    injects: list[dict[str, Any]] = field(default_factory=list)
    leaks: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    reuse: bool = False  # a later same-origin request that got the injected credential
    retry: bool = False  # the client asked again for the same URL after a 401 (pip does)
    replay: bool = False  # from a capture replayed through credhop's decisions, not a live proxy
    signed: str | None = None  # the kind of presigned URL this request went to: its own authorization
    superseded: bool = False  # the client's first try of this hop, which its retry (after a 401) replaced
    move: str | None = None  # what happened to the credential on the way to this hop
    findings: list[Finding] = field(default_factory=list)
    downloads: int = 0  # from `downloads` records: good downloads counted together, not one per request
    bytes: int = 0
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return origin_of(self.url)

    @property
    def injected(self) -> dict[str, Any] | None:
        return next((i for i in self.injects if i.get("action") == Action.INJECT), None)

    @property
    def skipped(self) -> dict[str, Any] | None:
        return next((i for i in self.injects if i.get("action") == Action.SKIP), None)

    @property
    def credential_sent(self) -> bool:
        return bool(self.sent) or self.injected is not None


    @property
    def credential_label(self) -> str:
        user = self.user or "(token)"
        return f"user {user}, {self.fingerprint}"


@dataclass(slots=True)
class Chain:
    id: str
    client: str
    hops: list[Hop]
    findings: list[Finding] = field(default_factory=list)
    verdict: str = "unknown"  # ok | failed | unknown
    _main: list[Hop] | None = None
    _sent_at: list[tuple[int, Sent]] | None = None

    def sent_before(self, index: int) -> Sent | None:
        """The last secret the client itself sent on a hop before `index`."""
        if self._sent_at is None:
            self._sent_at = [(h.index, s) for h in sorted(self.main, key=lambda h: h.index) for s in h.sent]
        at = bisect.bisect_left(self._sent_at, index, key=lambda pair: pair[0])
        return self._sent_at[at - 1][1] if at else None

    @property
    def main(self) -> list[Hop]:
        """The walk through the redirects, without the same-origin requests that reused a credential."""
        if self._main is None:  # hops are final once the chain is built; checks ask often
            self._main = [h for h in self.hops if not h.reuse]
        return self._main

    @property
    def start(self) -> float:
        return min((h.ts for h in self.hops), default=0.0)

    @property
    def worst(self) -> str | None:
        return min((f.severity for f in self.findings), key=severity_rank, default=None)

    @property
    def origins(self) -> list[str]:
        seen: dict[str, None] = {}
        for hop in self.hops:
            seen.setdefault(hop.origin, None)
        return list(seen)

    def has_error(self) -> bool:
        return any(f.severity == "error" for f in self.findings)


@dataclass(slots=True)
class HopLogRead:
    records: list[dict[str, Any]]
    malformed: list[int]  # 1-based line numbers of lines that are not hop-log records
    unknown_events: int = 0
    lines: int = 0  # lines read


# -- reading ----------------------------------------------------------------------------------


def _valid(record: Any) -> bool:
    return (isinstance(record, dict) and isinstance(record.get("event"), str)
            and isinstance(record.get("chain"), str) and bool(record["chain"])
            and type(record.get("hop")) is int and record["hop"] >= 0)


def parse_records(lines: Iterable[str]) -> HopLogRead:
    read = HopLogRead([], [])
    for number, line in enumerate(lines, 1):
        read.lines = number
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: a line nested thousands deep
            record = None
        if not _valid(record):
            read.malformed.append(number)
        elif record["event"] not in EVENTS:
            read.unknown_events += 1  # a newer credhop's event: not ours to judge
        else:
            read.records.append(record)
    return read


def read_hoplog(path: str | Path) -> HopLogRead:
    """Raises OSError when the file cannot be read; undecodable bytes count as malformed lines."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse_records(f)


# -- building chains ---------------------------------------------------------------------------


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def _num(value: Any) -> float | None:
    if type(value) not in (int, float):
        return None
    try:
        number = float(value)
    except OverflowError:  # a 400-digit integer
        return None
    return number if math.isfinite(number) else None


def origin_of(url: str) -> str:
    """scheme://host[:port] the way credhop's `target` field spells it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ""
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = port or DEFAULT_PORTS.get(scheme)
    return f"{scheme}://{host}" if port in (None, DEFAULT_PORTS.get(scheme)) else f"{scheme}://{host}:{port}"


def _resolve(location: str | None, base: str) -> str | None:
    if not location:
        return None
    try:
        return parse_location(location, base).url  # as WHATWG clients resolve it, like the addon
    except (LocationError, ValueError):
        return None


# Logs written before records carried `why` say it only in words.
_WHY_BY_WORDS = (
    ("Location header", Why.LOCATION_MISSING), ("no rule matched", Why.NO_RULE), ("plaintext", Why.PLAINTEXT_REFUSED),
    ("already holds a live credential", Why.SWAP_REFUSED), ("parsers disagree", Why.PARSERS_DISAGREE),
)


def why_of(reason: str | None, action: str | None) -> str | None:
    """The stable code of a redirect's `reason`, for records that carry only the words."""
    if not reason:
        return None
    for words, why in _WHY_BY_WORDS:
        if words in reason:
            return why
    return Why.LOCATION_UNPARSEABLE if action == Action.NONE else Why.CREDENTIAL_UNUSABLE


def _sent(value: Any) -> list[Sent]:
    if not isinstance(value, list):
        return []
    return [Sent(_str(s.get("header")) or "?", _str(s.get("scheme")), _str(s.get("fingerprint")),
                 s.get("injected") is True) for s in value if isinstance(s, dict)]


def _merge(hop: Hop, record: dict[str, Any]) -> None:
    event = record["event"]
    if record.get("reuse") is True:  # a writer that says so: not the follow-up, a later same-origin request
        hop.reuse = True
    if record.get("retry") is True:
        hop.retry = True
    if record.get("replay") is True:
        hop.replay = True
    if event == Event.REDIRECT:
        hop.redirect = True
        hop.status = _int(record.get("status"))
        hop.location, hop.target = _str(record.get("location")), _str(record.get("target"))
        hop.resolved = _resolve(hop.location, hop.url)
        hop.relative = record.get("relative") is True
        hop.action, hop.rule = _str(record.get("action")), _str(record.get("rule"))
        hop.reason, hop.user = _str(record.get("reason")), _str(record.get("user"))
        hop.why = _str(record.get("why")) or why_of(hop.reason, hop.action)
        hop.fingerprint, hop.ttl = _str(record.get("fingerprint")), _num(record.get("ttl"))
        hop.observe = record.get("observe") is True
        hop.sent = _sent(record.get("sent")) or hop.sent
    elif event == Event.RESPONSE:
        hop.status = _int(record.get("status"))
        hop.sent = _sent(record.get("sent")) or hop.sent
    elif event == Event.INJECT:
        hop.injects.append(record)
    elif event == Event.LEAK:
        hop.leaks.append(record)
    elif event == Event.ERROR:
        hop.error = _str(record.get("reason")) or "failed"
    elif event == Event.DOWNLOADS:
        _merge_downloads(hop, record)


def _merge_downloads(hop: Hop, record: dict[str, Any]) -> None:
    """Good downloads, counted together: a later same-origin hop, injected, with the statuses seen."""
    hop.reuse = True
    hop.downloads += max(0, _int(record.get("count")) or 0)
    hop.bytes += max(0, _int(record.get("bytes")) or 0)
    statuses = record.get("statuses")
    if isinstance(statuses, dict):
        for code, n in statuses.items():
            if isinstance(code, str) and code.isdigit() and type(n) is int and n > 0:
                hop.statuses[code] = hop.statuses.get(code, 0) + n
    codes = [int(c) for c in hop.statuses]
    hop.status = max(codes) if codes else hop.status
    if not hop.injects:
        hop.injects.append({k: record.get(k) for k in ("rule", "header", "user", "fingerprint")} | {"action": "inject"})


def _hops(records: list[dict[str, Any]]) -> list[Hop]:
    by_request: dict[Any, Hop] = {}
    for record in sorted(records, key=lambda r: (r["hop"], _num(r.get("ts")) or 0.0)):
        flow = _str(record.get("flow"))
        key = flow or (record["hop"], _str(record.get("method")), _str(record.get("url")))
        hop = by_request.get(key)
        if hop is None:
            method, url = _str(record.get("method")) or "?", _str(record.get("url")) or ""
            hop = by_request[key] = Hop(record["hop"], method, url, _num(record.get("ts")) or 0.0, flow,
                                        signed=signed_url_kind(url))
        _merge(hop, record)
    hops = sorted(by_request.values(), key=lambda h: (h.index, h.ts))
    # the follow-up of a hop is the request the proxy recognised (it has a status, a leak or an
    # error); requests that only got the injected credential are later same-origin requests
    main: dict[int, Hop] = {}
    for hop in hops:
        if not hop.reuse and (hop.status is not None or hop.leaks or hop.error):
            if hop.retry:  # the client's retry of this hop (after a 401) is what it finally got
                first = main.get(hop.index)
                if first is not None and not first.retry:
                    first.superseded = True  # not a later request that failed: the try before the retry
                main[hop.index] = hop
            else:
                main.setdefault(hop.index, hop)
    for hop in hops:
        if not hop.reuse:
            main.setdefault(hop.index, hop)  # a follow-up whose response never made it to the log
    for hop in hops:
        hop.reuse = main.get(hop.index) is not hop
    return hops


def _signed_side_walks(chain: Chain) -> list[Chain]:
    """`chain`, and each presigned download in it that a later request's redirect led to (a wheel download
    the index redirected to object storage) as a chain of its own, with that redirect: its authorization
    is the URL's own signature, and it is no step of the walk through the index's redirects."""
    if not any(h.signed and h.index > 0 for h in chain.hops):
        return [chain]
    main = {h.index: h for h in chain.hops if not h.reuse}
    senders: dict[tuple[int, Any], list[Hop]] = defaultdict(list)  # (hop, where its Location points)
    for h in chain.hops:
        if h.redirect and h.resolved:
            senders[(h.index, _target_key(h.resolved))].append(h)
    taken: set[int] = set()
    sides: list[Chain] = []
    for hop in sorted((h for h in chain.hops if h.signed and h.index > 0), key=lambda h: h.ts):
        prev = main.get(hop.index - 1)
        key = (hop.index - 1, _target_key(hop.url))
        if main.get(hop.index) is hop and prev is not None and prev in senders.get(key, ()):
            continue  # the walk's own follow-up: judged in place
        candidates = [h for h in senders.get(key, ()) if h is not prev and id(h) not in taken and h.ts <= hop.ts]
        if not candidates:
            continue  # no redirect led here: a request of its own, judged where it is
        walk = [candidates[-1], hop]
        for h in walk:
            h.reuse = False
            taken.add(id(h))
        sides.append(Chain(f"{chain.id}~signed{len(sides) + 1 if sides else ''}", chain.client, walk))
    if not taken:
        return [chain]
    return [Chain(chain.id, chain.client, [h for h in chain.hops if id(h) not in taken]), *sides]


def _target_key(url: str) -> tuple[str, ...]:
    """Origin and path of `url` (query values may be redacted in one place and not another)."""
    return tuple(urlsplit(normalize_url(url))[:3])
