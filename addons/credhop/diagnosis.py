"""Reads a credhop hop log and explains every redirect chain in it: its hops, what happened to the
credential on each hop, findings with stable codes, and a verdict.

Pure Python on purpose: `credhop report` must run wherever the log ends up, without mitmproxy.
The log is input from elsewhere, so every field is checked before use and odd lines are skipped.
"""

from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlsplit

from .records import EVENTS, Action, Event, Why
from .signed import signed_url_kind
from .urls import DEFAULT_PORTS, LocationError, normalize_url, parse_location

SEVERITIES = ("error", "warning", "info")  # most severe first
DENIED = frozenset((401, 403, 404))  # what registries answer a request without (valid) credentials
MAX_HOPS = 10  # uv (reqwest) gives up after 10 redirects
REUSE_SHOWN = 5


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of finding: a stable code, a stable name, a fixed severity."""

    code: str
    name: str
    severity: str
    title: str


CATALOGUE: tuple[Kind, ...] = (
    Kind("CH101", "credential-lost-on-redirect", "error",
         "a follow-up got 401/403/404 without a credential although one was in play"),
    Kind("CH102", "credential-rejected", "error",
         "a follow-up got 401/403/404 although it carried a credential"),
    Kind("CH103", "denied-after-redirect", "warning",
         "a follow-up got 401/403/404 and no credential was involved anywhere in the chain"),
    Kind("CH104", "error-status", "error", "a follow-up ended with another HTTP error status"),
    Kind("CH110", "credential-in-location", "info",
         "a Location carried userinfo, and what credhop did with it"),
    Kind("CH201", "credential-leaked-to-other-origin", "error",
         "the client re-sent a secret to another host or scheme after a redirect"),
    Kind("CH202", "credential-leaked-to-other-port", "error",
         "the client re-sent a secret to another port after a redirect"),
    Kind("CH203", "credential-leaked-over-plaintext", "error",
         "the client re-sent a secret over plaintext http after a redirect"),
    Kind("CH204", "leak-stripped", "warning",
         "the client tried to re-send a secret to another origin; credhop removed it"),
    Kind("CH205", "authorization-sent-to-signed-url", "error",
         "the client sent Authorization to a presigned URL, which carries its own signature"),
    Kind("CH301", "scheme-downgrade", "warning", "a redirect from https to plaintext http"),
    Kind("CH302", "redirect-loop", "error", "the chain requests the same URL twice"),
    Kind("CH303", "too-many-hops", "warning", f"more than {MAX_HOPS} redirects in one chain"),
    Kind("CH304", "location-missing", "error", "a redirect without exactly one Location header"),
    Kind("CH305", "location-unparseable", "error", "a Location no client can follow"),
    Kind("CH306", "relative-location", "info", "a relative Location, resolved against the request URL"),
    Kind("CH307", "method-changed", "warning", "a POST (or other method) became GET after a 301/302/303"),
    Kind("CH308", "malformed-path", "warning", "an empty path segment ('//') in the resolved Location"),
    Kind("CH401", "client-header-kept", "warning", "injection skipped: the client sent its own header"),
    Kind("CH402", "credential-expired", "warning", "injection skipped: the credential's TTL had run out"),
    Kind("CH403", "plaintext-refused", "warning", "injection refused: plaintext http destination"),
    Kind("CH404", "parsers-disagree", "warning",
         "injection refused: URL parsers disagree on the destination"),
    Kind("CH405", "no-rule-matched", "warning",
         "a Location credential matched no rule and was left in place"),
    Kind("CH406", "credential-unusable", "warning",
         "injection refused: the credential cannot go into a header"),
    Kind("CH407", "redirect-blocked", "warning", "a rule blocked the redirect; the client got 403"),
    Kind("CH408", "credential-swap-refused", "warning",
         "injection refused: another redirector already handed out a live credential for that origin"),
    Kind("CH501", "follow-up-failed", "error", "a follow-up failed without a response (connection, TLS)"),
    Kind("CH502", "follow-up-not-seen", "warning",
         "the client never made the follow-up request through the proxy"),
)
KINDS: dict[str, Kind] = {k.code: k for k in CATALOGUE}
KINDS_BY_NAME: dict[str, Kind] = {k.name: k for k in CATALOGUE}


def kind_of(code_or_name: str) -> Kind | None:
    key = code_or_name.strip()
    return KINDS.get(key.upper()) or KINDS_BY_NAME.get(key.lower())


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    message: str  # one line: what happened
    hint: str  # one line: how to fix it
    hop: int | None = None

    @property
    def code(self) -> str:
        return self.kind.code

    @property
    def name(self) -> str:
        return self.kind.name

    @property
    def severity(self) -> str:
        return self.kind.severity


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


def cannot_fail(records: list[dict[str, Any]]) -> bool:
    """True when `diagnose(records)` cannot give the verdict "failed", judged from the records alone
    (the live proxy then skips the diagnosis of a chain that ended well). Conservative: False whenever
    any error-level finding or failure condition in `_assess` might apply: a leak or error record
    (CH2xx error kinds, CH501), a status of 400 or more (CH101, CH102, CH104, an error status at the
    end), a redirect with a `why`/`reason` (CH304, CH305) or a block, a URL or a flow at two hop indexes
    (CH302; hops merged), or a redirect or a later download at the last hop index (a chain that did not
    end with its own answer)."""
    urls: dict[str, int] = {}
    flows: dict[Any, int] = {}
    last = max((r["hop"] for r in records if type(r.get("hop")) is int), default=-1)
    answered = False
    for record in records:
        event, hop, status = record.get("event"), record.get("hop"), record.get("status")
        if event not in ("redirect", "inject", "response") or type(hop) is not int:
            return False
        if status is not None and (type(status) is not int or status >= 400):
            return False
        if event == "redirect" and (record.get("why") or record.get("reason") or record.get("action") == "block"
                                    or hop == last):
            return False
        if hop == last and record.get("reuse") is True:
            return False  # the last hop must be the walk's own answer, not a later download
        if event == "response" and hop == last and status is not None and status < 300:
            answered = True
        url = record.get("url")
        if not isinstance(url, str):
            return False
        url = url.split("#", 1)[0]
        if urls.setdefault(url, hop) != hop:
            return False
        flow = record.get("flow")
        if flow is not None and flows.setdefault(flow, hop) != hop:  # one request, two hops: merged
            return False
    return answered


def diagnose(records: Iterable[dict[str, Any]]) -> list[Chain]:
    """Chains of the given hop-log records, with findings and verdicts, worst first."""
    by_chain: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if _valid(record) and record["event"] in EVENTS:
            by_chain[record["chain"]].append(record)
    chains = [side for cid, recs in by_chain.items()
              for side in _signed_side_walks(Chain(cid, _str(recs[0].get("client")) or "?", _hops(recs)))]
    grants = _Grants(chains)
    for chain in chains:
        _assess(chain, grants)
    order = {"failed": 0, "unknown": 1, "ok": 2}
    return sorted(chains, key=lambda c: (order[c.verdict], c.start))


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


def diagnose_file(path: str | Path) -> tuple[list[Chain], HopLogRead]:
    read = read_hoplog(path)
    return diagnose(read.records), read


# -- findings ------------------------------------------------------------------------------------


class _Grants:
    """Credentials credhop held (inject, not observe) by client and origin, to tell a TTL that ran out."""

    def __init__(self, chains: list[Chain]) -> None:
        self.by_key: dict[tuple[str, str], list[tuple[Hop, str]]] = defaultdict(list)
        for chain in chains:
            for hop in chain.main:
                if hop.action == Action.INJECT and hop.ttl is not None and hop.target and not hop.observe:
                    self.by_key[(chain.client, hop.target)].append((hop, chain.id))

    def expired(self, client: str, hop: Hop) -> tuple[Hop, str] | None:
        """The latest grant for `hop`'s origin whose TTL ran out before it, unless a live one existed."""
        earlier = [(g, c) for g, c in self.by_key.get((client, hop.origin), []) if g.ts < hop.ts]
        if not earlier or any(g.ts + (g.ttl or 0) >= hop.ts for g, _ in earlier):
            return None
        return max(earlier, key=lambda gc: gc[0].ts)


Check = Callable[[Chain, "_Grants"], Iterator[Finding]]


def _f(code: str, message: str, hint: str, hop: int | None) -> Finding:
    return Finding(KINDS[code], message, hint, hop)


def _what_credhop_did(hop: Hop, follow: Hop | None) -> str:
    rule = f"rule {hop.rule}" if hop.rule else "no rule"
    if hop.observe and hop.replay:
        return f"credhop was not in the path (a capture, replayed): it would {hop.action} it ({rule})"
    if hop.observe:
        return f"credhop only observed: it would {hop.action} it ({rule})"
    if hop.action == Action.INJECT:
        header = (follow.injected or follow.skipped or {}).get("header") if follow else None
        ttl = f", ttl {hop.ttl:g} s" if hop.ttl else ""
        return f"credhop moved it into the {header or 'request'} header for {hop.target} ({rule}{ttl})"
    if hop.action == Action.STRIP:
        return f"credhop removed it from the Location ({rule})"
    if hop.action == Action.BLOCK:
        return f"credhop blocked the redirect ({rule})"
    if hop.reason:
        return f"credhop left it in the Location: {hop.reason}"
    return f"credhop left it in the Location ({rule} keeps it)"


def _check_location_credential(chain: Chain, grants: _Grants) -> Iterator[Finding]:
    main = chain.main
    for n, hop in enumerate(main):
        if hop.redirect and hop.fingerprint:
            follow = main[n + 1] if n + 1 < len(main) else None
            yield _f("CH110", f"the Location of hop {hop.index} carries a credential "
                     f"({hop.credential_label}); {_what_credhop_did(hop, follow)}",
                     "userinfo in a Location is non-standard: uv < 0.7.16, requests, httpx, urllib3, curl "
                     "without --location-trusted and browsers drop it when they follow; an inject rule moves "
                     "it into a header bound to that origin", hop.index)


def _lost_source(chain: Chain, prev: Hop | None, hop: Hop, grants: _Grants) -> tuple[str, str] | None:
    """(where the credential was, how to keep it) for a follow-up that carried none, or None."""
    if prev and prev.fingerprint:
        where = f"the Location of hop {prev.index} carried one ({prev.credential_label})"
        if prev.observe and prev.replay:
            into = " into the follow-up" if prev.action == Action.INJECT else ""
            fix = (f"this capture was made without credhop: through it (mitmdump -s addons/credhop.py) rule "
                   f"{prev.rule} would {prev.action} this credential{into}; or use a client that keeps Location "
                   "userinfo (uv >= 0.7.16)")
        elif prev.observe:
            into = " into the follow-up" if prev.action == Action.INJECT else ""
            fix = (f"credhop only observed (credhop_observe=true); without it rule {prev.rule} would "
                   f"{prev.action} this credential{into}; or use a client that keeps Location userinfo "
                   "(uv >= 0.7.16)")
        elif prev.action == Action.STRIP:
            fix = f"rule {prev.rule} strips the credential: use action: inject to move it into a header"
        elif prev.action == Action.INJECT:
            fix = (f"credhop held it for {prev.target}, but this request went to {hop.origin} or came too "
                   "late; check the Location's host, port and scheme")
        else:
            why = prev.reason or f"rule {prev.rule}"
            fix = (f"credhop left it in the Location ({why}) and the client dropped it: add or fix an inject "
                   "rule for this host")
        return where, fix
    own = chain.sent_before(hop.index)
    if own:
        return (f"the request of hop {hop.index - 1} carried {own.label()}",
                "the client drops its own credential when a redirect changes origin (as it should): "
                f"configure credentials for {hop.origin} in the client, or have the redirector hand them out")
    grant = grants.expired(chain.client, hop)
    if grant:
        g, cid = grant
        return (f"credhop had held one for {hop.origin} ({g.credential_label}, chain {cid}) until its TTL "
                "ran out", "raise ttl on the rule (or credhop_ttl), or have the redirector hand out the "
                "credential again")
    return None


def _check_denied(chain: Chain, grants: _Grants) -> Iterator[Finding]:
    main = chain.main
    for n, hop in enumerate(main):
        if hop.index == 0 or hop.status is None or hop.redirect or hop.status < 400:
            continue
        prev = main[n - 1] if n else None
        request = f"{hop.method} {hop.url} got {hop.status}"
        if hop.signed:
            yield from _signed_denied(hop, request)
        elif hop.status not in DENIED:
            yield _f("CH104", f"{request} after the redirect",
                     "look at the server's log for this request: the redirect itself worked", hop.index)
        elif hop.credential_sent:
            sent = hop.sent[0].label() if hop.sent else "the injected header"
            other = ""
            handed_out = prev.fingerprint if prev else None
            if handed_out and hop.sent and all(s.fingerprint != handed_out for s in hop.sent):
                other = f"; it is not the credential the Location handed out ({handed_out})"
            yield _f("CH102", f"{request} although it carried {sent}{other}",
                     "the server refused this credential: expired or revoked, meant for another repository, "
                     "or the path is wrong (a 404 can mean either)", hop.index)
        else:
            source = _lost_source(chain, prev, hop, grants)
            if source:
                yield _f("CH101", f"{request} without a credential, although {source[0]}", source[1],
                         hop.index)
            else:
                yield _f("CH103", f"{request} after a redirect; no credential was involved anywhere in the "
                         "chain",
                         f"if {hop.origin} needs authentication, configure the client with credentials for "
                         "it; a 404 can also mean the redirect points to the wrong path", hop.index)


def _authorization_sent(hop: Hop) -> bool:
    """Whether an Authorization header reached the server on this hop (a stripped leak did not)."""
    return (any(s.header == "authorization" for s in hop.sent)
            or any(leak.get("header") == "authorization" and leak.get("action") != Action.STRIP for leak in hop.leaks))


def _signed_denied(hop: Hop, request: str) -> Iterator[Finding]:
    if _authorization_sent(hop):
        return  # CH205 names the cause
    if hop.status in DENIED or hop.status == 400:
        yield _f("CH102", f"{request} although the URL carries its own signature ({hop.signed}); no client "
                 "credential belongs there",
                 "the storage refused the signature: presigned URLs expire within minutes (retry, so the registry "
                 "signs a fresh one), and must be requested as signed (same method, no extra signed headers); "
                 "check the clocks of the registry and the client", hop.index)
    else:
        yield _f("CH104", f"{request} at a presigned URL ({hop.signed})",
                 "look at the storage service's answer for this request: the redirect itself worked", hop.index)


def _check_signed(chain: Chain, grants: _Grants) -> Iterator[Finding]:
    for hop in chain.hops:
        if hop.signed and hop.index > 0 and _authorization_sent(hop):
            answer = f" and got {hop.status}" if hop.status is not None else ""
            yield _f("CH205", f"{hop.method} {hop.url} carried Authorization to a presigned URL "
                     f"({hop.signed}){answer}: the signature in the URL already authorizes it, so the header is a "
                     "second mechanism (S3 answers 400 'Only one auth mechanism allowed') and a leak to the storage "
                     "origin",
                     "the client must drop Authorization when a redirect leaves the registry's origin (curl without "
                     "--location-trusted, current pip/uv/requests); or set on_leak: strip on the rule that matches "
                     "the registry's redirects", hop.index)


def _check_leaks(chain: Chain, grants: _Grants) -> Iterator[Finding]:
    for hop in chain.main:
        for leak in hop.leaks:
            kind, target = _str(leak.get("kind")) or "other-host", _str(leak.get("target")) or hop.origin
            what = (f"the client re-sent {leak.get('header')} ({leak.get('fingerprint')}) to {target} after "
                    f"the redirect from {leak.get('came_from')} ({kind})")
            fix = ("the client forwards secrets across origins on redirect (curl --location-trusted, old "
                   "requests or urllib3): upgrade it or change its options")
            if leak.get("action") == Action.STRIP:
                yield _f("CH204", f"{what}; credhop removed it (on_leak: strip)", fix, hop.index)
            elif kind == "scheme-downgrade" or target.startswith("http://"):
                yield _f("CH203", f"{what}, readable on the network",
                         f"{fix}; set on_leak: strip on the rule", hop.index)
            else:
                code = "CH202" if kind == "other-port" else "CH201"
                yield _f(code, what, f"{fix}; set on_leak: strip on the rule", hop.index)


def _check_redirect_shape(chain: Chain, grants: _Grants) -> Iterator[Finding]:
    main = chain.main
    for n, hop in enumerate(main):
        if not hop.redirect:
            continue
        follow = main[n + 1] if n + 1 < len(main) else None
        where = hop.target or (hop.resolved and origin_of(hop.resolved)) or ""
        if hop.url.startswith("https:") and where.startswith("http:"):
            yield _f("CH301", f"hop {hop.index} redirects from {hop.origin} to plaintext {where}",
                     "whatever the follow-up carries crosses the network unencrypted: make the redirector "
                     "point to https", hop.index)
        reason = hop.reason or ""
        if hop.why in (Why.LOCATION_MISSING, Why.LOCATION_SEVERAL):
            yield _f("CH304", f"the {hop.status} of hop {hop.index} came with {reason}",
                     "the server must send exactly one Location with a 3xx; fix the redirector", hop.index)
        elif hop.why == Why.LOCATION_UNPARSEABLE:
            yield _f("CH305", f"the Location of hop {hop.index} cannot be followed: {reason}",
                     "the server must send an absolute or relative http(s) URL; fix the redirector",
                     hop.index)
        resolved = hop.resolved
        if hop.relative and resolved:
            yield _f("CH306", f"the Location of hop {hop.index} ({hop.location}) is relative; resolved "
                     f"against {hop.url} it is {resolved}",
                     "fine for conforming clients; check it is the URL you meant (a trailing slash on the "
                     "base changes the result)", hop.index)
        if resolved and "//" in urlsplit(resolved).path:
            yield _f("CH308", f"the Location of hop {hop.index} resolves to a path with an empty segment: "
                     f"{urlsplit(resolved).path}",
                     "many servers answer such paths with 404 or another resource: usually a base URL ending "
                     "in '/' joined with a path starting with '/'", hop.index)
        if (follow and hop.status in (301, 302, 303) and hop.method not in ("GET", "HEAD")
                and follow.method == "GET"):
            yield _f("CH307", f"hop {hop.index} sent {hop.method}, got {hop.status}, and the client "
                     "followed with GET (the body is gone)",
                     "use 307 or 308 to keep the method and body across the redirect", hop.index)


def _check_chain_shape(chain: Chain, grants: _Grants) -> Iterator[Finding]:
    main = chain.main
    seen: dict[str, int] = {}
    urls = [(h.index, h.url) for h in main]
    # a URL that comes back once and then answers (a cookie or login bounce) is no loop
    ended_well = bool(main) and not main[-1].redirect and (main[-1].status or 999) < 400
    if main and main[-1].redirect and main[-1].resolved:
        urls.append((main[-1].index + 1, main[-1].resolved))  # where the client would have gone next
    for index, url in urls:
        url = url.split("#", 1)[0]
        if url in seen and not ended_well:
            yield _f("CH302", f"hop {index} goes to {url} again (first at hop {seen[url]})",
                     "the server redirects in a circle, often a login or cookie check the client does not "
                     "pass; clients give up at their redirect limit", index)
            break
        seen[url] = index
    redirects = sum(1 for h in main if h.redirect)
    if redirects > MAX_HOPS:
        yield _f("CH303", f"{redirects} redirects in one chain",
                 f"uv (reqwest) stops after {MAX_HOPS} redirects; point the client closer to the final URL",
                 None)


def _check_injection(chain: Chain, grants: _Grants) -> Iterator[Finding]:
    for hop in chain.main:
        skipped = hop.skipped
        if skipped:
            yield _f("CH401", f"credhop did not inject into {hop.method} {hop.url}: "
                     f"{skipped.get('reason') or 'the client sent its own header'}",
                     "set override_client_header: true on the rule if the client's own header is the wrong "
                     "one", hop.index)
        if hop.index > 0 and not hop.credential_sent and not hop.skipped:
            grant = grants.expired(chain.client, hop)
            if grant:
                g, cid = grant
                yield _f("CH402", f"no credential for {hop.origin}: credhop's ({g.credential_label}) came "
                         f"with chain {cid} {hop.ts - g.ts:.0f} s earlier and its TTL is {g.ttl:g} s",
                         "raise ttl on the rule (or credhop_ttl) to cover the client's whole run", hop.index)
        if not (hop.redirect and hop.fingerprint):
            continue
        reason, why = hop.reason or "", hop.why
        if hop.action == Action.BLOCK and not hop.observe:
            yield _f("CH407", f"rule {hop.rule} blocked the {hop.status} of hop {hop.index} to "
                     f"{hop.target}; the client got 403",
                     "if the redirect is legitimate, change the rule's action to inject", hop.index)
        elif why == Why.NO_RULE:
            yield _f("CH405", f"the credential for {hop.target} matched no rule and stayed in the Location",
                     "add a rule (action: inject) that matches this host; most clients drop the credential",
                     hop.index)
        elif why == Why.PLAINTEXT_REFUSED:
            yield _f("CH403", f"credhop did not inject for {hop.target}: {reason}",
                     "use https for the registry, or set allow_plaintext: true on a rule for this host only",
                     hop.index)
        elif why == Why.SWAP_REFUSED:
            yield _f("CH408", f"credhop did not inject for {hop.target}: {reason}",
                     "credhop keeps the first redirector's credential so another site cannot swap it; if "
                     "both redirectors are yours, let one hand out the credential, or wait for the TTL",
                     hop.index)
        elif why == Why.PARSERS_DISAGREE:
            yield _f("CH404", f"credhop did not inject for hop {hop.index}: {reason}",
                     "the Location is ambiguous (backslash or '@' tricks) and may be crafted to send the "
                     "credential elsewhere: check the redirector", hop.index)
        elif why == Why.CREDENTIAL_UNUSABLE and hop.action == Action.KEEP:
            yield _f("CH406", f"credhop did not inject for {hop.target}: {reason}",
                     "the userinfo holds something no header may carry; fix the credential the redirector "
                     "hands out", hop.index)


def _check_follow_ups(chain: Chain, grants: _Grants) -> Iterator[Finding]:
    main = chain.main
    for hop in main:
        if hop.error:
            yield _f("CH501", f"{hop.method} {hop.url} failed: {hop.error}",
                     "the proxy could not reach the Location's origin (DNS, port, TLS): check the target",
                     hop.index)
    last = main[-1] if main else None
    stuck = any(f.code in ("CH302", "CH303") for f in chain.findings)
    if (last and last.redirect and last.action not in (Action.NONE, Action.BLOCK) and not last.error
            and last.target and not stuck):
        yield _f("CH502", f"nothing shows the client following hop {last.index}'s {last.status} to "
                 f"{last.target}",
                 "the client stopped (see its output), bypassed the proxy for that host (NO_PROXY), or "
                 "mitmproxy refused its request (uv 0.5.25 through an http:// proxy puts kept userinfo into "
                 "the request line: 400 Bad Request)", last.index)


def _check_reused(chain: Chain, grants: _Grants) -> Iterator[Finding]:
    """Later same-origin requests (the wheel downloads) can fail after the index page worked."""
    for hop in chain.hops:
        if not hop.reuse or hop.superseded:
            continue
        request = f"{hop.method} {hop.url} (a later request to the same origin) "
        if hop.error:
            yield _f("CH501", f"{request}failed: {hop.error}",
                     "the proxy could not reach the origin (DNS, port, TLS): check the target", hop.index)
        elif hop.status is not None and hop.status >= 400 and not hop.redirect:
            if hop.status in DENIED and hop.credential_sent:
                yield _f("CH102", f"{request}got {hop.status} although it carried a credential",
                         "the server refused this credential for this path: a token scoped to the index "
                         "but not the files, or expired meanwhile", hop.index)
            else:
                yield _f("CH104", f"{request}got {hop.status}",
                         "look at the server's log for this request: the redirect itself worked", hop.index)


CHECKS: tuple[Check, ...] = (_check_location_credential, _check_denied, _check_leaks, _check_signed,
                             _check_redirect_shape, _check_chain_shape, _check_injection, _check_follow_ups,
                             _check_reused)


def _move(prev: Hop, hop: Hop) -> str | None:
    """What happened to a credential between a redirect and its follow-up, in one word."""
    if hop.leaks:
        return "leaked" if any(leak.get("action") != Action.STRIP for leak in hop.leaks) else "leak-stripped"
    if hop.injected:
        return "injected"
    if hop.skipped:
        return "client-header"
    if prev.fingerprint and any(s.fingerprint == prev.fingerprint for s in hop.sent):
        return "forwarded"  # the client kept the Location's userinfo itself
    if hop.sent:
        return "client-credential"
    if hop.signed:
        return "signed"  # needs no credential: the URL carries its own
    if prev.fingerprint or prev.sent:
        if prev.fingerprint and prev.action == Action.STRIP and not prev.observe:
            return "stripped"
        return "lost" if hop.status in DENIED else "dropped"
    return None


def _assess(chain: Chain, grants: _Grants) -> None:
    main = chain.main
    for prev, hop in zip(main, main[1:], strict=False):
        hop.move = _move(prev, hop)
    for hop in chain.hops:
        if hop.reuse:
            hop.move = "injected" if hop.injected else ("client-header" if hop.skipped else None)
    for check in CHECKS:
        chain.findings.extend(check(chain, grants))
    chain.findings.sort(key=lambda f: (severity_rank(f.severity), f.hop if f.hop is not None else -1, f.code))
    by_index = {h.index: h for h in main}
    for finding in chain.findings:
        if finding.hop in by_index:
            hop = by_index[finding.hop]
            hop.findings.append(finding)
            if finding.code == "CH101" and hop.move in (None, "dropped"):
                hop.move = "lost"  # e.g. a credential credhop held until its TTL ran out
    last = main[-1] if main else None
    blocked = last is not None and last.action == Action.BLOCK and not last.observe  # the client got credhop's 403
    if chain.has_error() or blocked or (last and (last.error or (last.status or 0) >= 400)):
        chain.verdict = "failed"
    elif last and not last.redirect and last.status is not None:
        chain.verdict = "ok"
    else:
        chain.verdict = "unknown"
