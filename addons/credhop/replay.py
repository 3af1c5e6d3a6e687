"""Captured traffic as hop records: the decision core run in observe mode over exchanges.

The live addon decides on a flow as it passes; here the same functions (`decide.decide_redirect`,
`decide.decide_follow_up`) decide on exchanges read from a capture, in the order their requests
started, with the capture's own timestamps as the clock of the pending follow-ups. A 3xx's resolved
Location is linked to the next request for that URL from the same client (in a HAR: the same page),
a 401 to the client's retry of the same URL, exactly as the addon links them; nothing is changed,
so every record is what credhop in observe mode (`credhop_observe=true`) would have written, marked
`replay`. `collect` reads every input of `credhop report`: hop logs as they are, captures replayed.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import secrets
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from .captures import CaptureError, Exchange, read_flows, read_har, sniff
from .credentials import Fingerprinter
from .decide import (
    REDIRECTS,
    FollowUp,
    Redirect,
    decide_follow_up,
    decide_redirect,
    next_position,
    redirect_record,
)
from .diagnosis import parse_records
from .leaks import secrets_sent
from .pending import ChainPosition, MemoryPending
from .records import SCHEMA, Action, ErrorRecord, LeakRecord, Record, ResponseRecord
from .rules import RuleSet, load_rules, parse_rules
from .scrub import Redactor, secret_header_names
from .urls import normalize_url, redact_url

SHIPPED_RULES = Path(__file__).resolve().parents[2] / "rules.yaml"
# the shipped rules.yaml without its comments, for an installed package that lacks the file
_BUILTIN_RULES = """rules:
  - name: codeartifact
    match: {host: "*.d.codeartifact.*.amazonaws.com", scheme: https}
    action: inject
    on_leak: strip
  - name: default
    action: inject
    on_leak: strip
"""
DEFAULT_TTL = 600


class InputError(Exception):
    """An input `credhop report` cannot use; the message is one line and names no secret."""


def shipped_rules() -> RuleSet:
    return load_rules(SHIPPED_RULES) if SHIPPED_RULES.exists() else parse_rules(_BUILTIN_RULES, "<shipped rules>")


def replay(exchanges: Iterable[Exchange], rules: RuleSet, fingerprint: Fingerprinter, ttl: int = DEFAULT_TTL,
           secret_headers: frozenset[str] = secret_header_names()) -> list[dict[str, Any]]:
    """The hop records credhop in observe mode would have written for `exchanges`, as JSON objects."""
    return asyncio.run(_Replay(rules, fingerprint, ttl, secret_headers).run(exchanges))


class _Replay:
    def __init__(self, rules: RuleSet, fingerprint: Fingerprinter, ttl: int, secret_headers: frozenset[str]) -> None:
        self.rules, self.fingerprint, self.ttl, self.names = rules, fingerprint, ttl, secret_headers
        self.now = 0.0
        self.pending = MemoryPending(clock=lambda: self.now)
        self.redactor = Redactor(secret_headers, remembered=sys.maxsize)  # a capture is finite: forget nothing
        self.records: list[dict[str, Any]] = []

    async def run(self, exchanges: Iterable[Exchange]) -> list[dict[str, Any]]:
        for exchange in sorted(exchanges, key=lambda e: (e.start, e.order)):
            await self.exchange(exchange)
        return self.records

    async def exchange(self, ex: Exchange) -> None:
        link = ex.link or ex.client
        # the request (the addon's requestheaders)
        self.now = ex.start
        position = watch = None
        if self.pending.awaits(link):
            position = await self.pending.follow(link, normalize_url(ex.url))
            if position is None:
                watch = await self.pending.watching(link, ex.origin)
        sent = secrets_sent(ex.request_headers, self.names, self.fingerprint)
        if position is not None or watch is not None:
            decision = decide_follow_up(FollowUp(ex.origin, sent, frozenset(k.lower() for k, _ in ex.request_headers),
                                                 position, held=None, watch=watch))  # observe: nothing is held
            at = decision.leak_at
            for leak in decision.leaks:
                assert at is not None
                self.emit(LeakRecord(**self.base(ex, at, reuse=position is None), header=leak.header,
                                     fingerprint=leak.fingerprint, kind=leak.kind, came_from=str(at.came_from),
                                     target=str(ex.origin), action=Action.LOG))
        # the response, or its absence (responseheaders, response, error)
        self.now = max(ex.end, ex.start)
        if ex.status is None:
            if position is not None:
                self.emit(ErrorRecord(**self.base(ex, position), reason=ex.error or "no response"))
        elif ex.status in REDIRECTS:
            await self.redirect(ex, position or ChainPosition(_chain_id(ex), 0), sent, link)
        elif position is not None and position.hop > 0:
            self.emit(ResponseRecord(**self.base(ex, position), status=ex.status,
                                     sent=[s.as_record() for s in sent] or None))
            if ex.status == 401 and not position.retry:  # pip asks again, with credentials
                await self.pending.expect(link, normalize_url(ex.url), ex.origin, replace(position, retry=True))

    async def redirect(self, ex: Exchange, position: ChainPosition, sent: list[Any], link: str) -> None:
        assert ex.status is not None
        redirect = Redirect(ex.client, ex.url, ex.origin, ex.status, ex.locations())
        decision = decide_redirect(redirect, self.rules, self.fingerprint, self.ttl, self.now,
                                   ChainPosition(position.chain, position.hop + 1))
        if decision.location and decision.location.credential:
            self.redactor.remember(decision.location.credential.secret_forms())
        self.emit(redirect_record(self.base(ex, position), redirect, decision, sent, observe=True))
        if decision.location:
            await self.pending.expect(link, decision.location.normalized, decision.location.origin,
                                      next_position(redirect, position, decision, sent, frozenset()))

    def base(self, ex: Exchange, position: ChainPosition, reuse: bool = False) -> dict[str, Any]:
        return dict(ts=round(self.now, 6), client=ex.client, chain=position.chain, hop=position.hop, flow=ex.flow,
                    method=ex.method, url=redact_url(ex.url), retry=position.retry, reuse=reuse)

    def emit(self, record: Record) -> None:
        line = json.dumps({"v": SCHEMA, **self.redactor.record(record.as_dict())})  # type: ignore[dict-item]
        self.records.append({**json.loads(line), "replay": True})  # exactly what a hop log holds, read back


def _chain_id(ex: Exchange) -> str:
    """A chain id that stays the same every time the same capture is replayed."""
    return hashlib.sha256(f"{ex.flow}\0{ex.start!r}\0{ex.url}".encode("utf-8", "surrogateescape")).hexdigest()[:12]


# -- every input of `credhop report` ---------------------------------------------------------------------


@dataclass(slots=True)
class Collected:
    records: list[dict[str, Any]]
    malformed: list[int]
    exchanges: int = 0  # read from captures


MAX_INPUT_MB = 64  # a HAR is parsed whole: about 8 times its size in memory


def read_input(path: str, limit_mb: int = MAX_INPUT_MB) -> bytes:
    """A file's bytes (`-`: stdin); one larger than `limit_mb` is refused, never read whole."""
    name, limit = "stdin" if path == "-" else path, limit_mb * 2**20
    try:
        if path == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as f:
                # a regular file's size first, nothing read; a pipe has none and is read up to the limit
                too_big = os.fstat(f.fileno()).st_size > limit
                data = b"" if too_big else f.read(limit + 1)
            if too_big:
                raise InputError(f"{name} is larger than {limit_mb} MB, the most credhop report reads "
                                 "(--max-input-mb)")
    except OSError as e:
        raise InputError(f"cannot read {name}: {e.strerror or e}") from None
    if len(data) > limit:
        raise InputError(f"{name} is larger than {limit_mb} MB, the most credhop report reads (--max-input-mb)")
    return data


def collect(paths: Sequence[str], rules: RuleSet | None = None, fingerprint_key: bytes | None = None,
            limit_mb: int = MAX_INPUT_MB) -> Collected:
    """Hop records from hop logs, flow files and HAR files (told apart by content), merged.

    Raises InputError for a file that cannot be read, is too large, or is none of the three."""
    out = Collected([], [])
    exchanges: list[Exchange] = []
    lines = 0  # several hop logs: malformed line numbers count on from the previous log's last line
    for n, path in enumerate(paths):
        name = "stdin" if path == "-" else path
        data = read_input(path, limit_mb)
        try:
            kind, doc = sniff(data)
            if kind == "har":
                exchanges += read_har(doc, Path(name).name, n)
            elif kind == "flows":
                exchanges += read_flows(io.BytesIO(data), n)
            else:
                read = parse_records(io.StringIO(data.decode("utf-8", errors="replace"), newline=None))
                if len(read.malformed) > len(read.records):
                    # mostly something else (a README holds example lines): half a reading would mislead
                    found = (f"holds no hop-log records ({len(read.malformed)} malformed line(s))"
                             if not read.records else
                             f"is not a hop log: {len(read.malformed)} of its lines are not hop-log records "
                             f"(the first at line {read.malformed[0]}), {len(read.records)} are")
                    raise InputError(f"{name} {found}; is it a credhop_log file, a HAR or a mitmproxy flow file?")
                out.records += read.records
                out.malformed += [lines + m for m in read.malformed]
                lines += read.lines
        except CaptureError as e:
            raise InputError(f"{name}: {e}") from None
    if exchanges:
        key = fingerprint_key or secrets.token_bytes(32)  # fingerprints comparable within this report
        out.records += replay(exchanges, rules or shipped_rules(), Fingerprinter(key))
        out.exchanges = len(exchanges)
    return out
