"""The live chains page on the operator listener: the recent chains of this instance, newest first,
drawn as `credhop report --html` draws them, redrawn as records come in.

- `/` the page; `/chains` its list alone (what the page fetches); `/chains.json` the same as
  `credhop report --format json`; `/chain/ID.jsonl` one chain's records, which `credhop report` reads;
  `/events` a Server-Sent Events stream that says when something changed.
- Filters are query parameters: `failed=1`, `client=`, `rule=`, `code=`, `limit=`.
- It holds what the hop log holds (the records, through the same Redactor), and escapes everything that
  came from the network; its one script carries a per-response nonce, so markup in a host name cannot run.

Each chain is diagnosed again only when it got a record since it was last drawn. No mitmproxy here.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qs, quote, urlencode

from .diagnosis import Chain, diagnose
from .html_report import CSS, LEGEND, chain_section, escaped
from .records import SCHEMA
from .report import render_json, totals_line
from .scrub import Redactor, scrub

Snapshot = Callable[[], list[tuple[str, list[dict[str, Any]]]]]
DEFAULT_LIMIT, MAX_LIMIT = 50, 1_000
EVENT_POLL = 0.25  # seconds between looks at the version: a new chain shows within about half a second
EVENT_HEARTBEAT = 15.0  # seconds: a comment keeps proxies and browsers from closing an idle stream
EVENT_STREAM_MAX = 600.0  # seconds; the browser reconnects, and a stuck stream frees its thread

PAGE_CSS = CSS + """
.bar{display:flex;gap:14px;align-items:center;flex-wrap:wrap;margin:0 0 14px}
.bar label{font-size:13px}.bar select,.bar input{font:inherit;font-size:13px}
.scope{color:#4a5563;margin:0 0 6px}.live{font-size:12px;color:#2e7d32}.live.off{color:#b27d00}
.tools{margin:-4px 0 10px;font-size:12.5px;color:#4a5563}
"""
# fetch the list again whenever /events says something changed; the stream reconnects by itself
SCRIPT = """
const list = document.getElementById('chains'), live = document.getElementById('live');
let busy = false, again = false;
async function redraw() {
  if (busy) { again = true; return; }
  busy = true;
  try {
    const r = await fetch('chains' + location.search, {cache: 'no-store', credentials: 'same-origin'});
    if (r.ok) { list.innerHTML = await r.text(); }
  } finally { busy = false; if (again) { again = false; redraw(); } }
}
const events = new EventSource('events');
events.onmessage = redraw;
events.onopen = () => { live.textContent = 'live'; live.className = 'live'; };
events.onerror = () => { live.textContent = 'reconnecting…'; live.className = 'live off'; };
"""


@dataclass(frozen=True, slots=True)
class Filters:
    failed: bool = False
    client: str = ""
    rule: str = ""
    code: str = ""
    limit: int = DEFAULT_LIMIT

    @classmethod
    def of(cls, query: str) -> Filters:
        q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        try:
            limit = max(1, min(MAX_LIMIT, int(q.get("limit", DEFAULT_LIMIT))))
        except ValueError:
            limit = DEFAULT_LIMIT
        return cls(q.get("failed", "") not in ("", "0"), q.get("client", ""), q.get("rule", ""),
                   q.get("code", "").upper(), limit)

    def take(self, chain: Chain) -> bool:
        return ((not self.failed or chain.verdict == "failed")
                and (not self.client or chain.client == self.client)
                and (not self.rule or any(h.rule == self.rule for h in chain.hops))
                and (not self.code or any(f.code == self.code for f in chain.findings)))


class ChainsPage:
    """A WSGI app over the recent chains' records (sinks.RecentChains.snapshot)."""

    def __init__(self, snapshot: Snapshot, version: Callable[[], int], redactor: Callable[[], Redactor],
                 instance: Callable[[], str], peers: Callable[[], tuple[str, ...]],
                 closing: Any = None) -> None:
        self.snapshot, self.version, self.redactor = snapshot, version, redactor
        self.instance, self.peers = instance, peers
        self.closing = closing  # a threading.Event: set when the listener closes
        self._drawn: dict[str, tuple[int, list[Chain]]] = {}  # chain id -> (records seen, its diagnosis)

    # -- the chains -----------------------------------------------------------------------------

    def chains(self) -> list[Chain]:
        """Newest first; a chain is diagnosed again only when it got a record since it was last drawn."""
        redactor = self.redactor()
        drawn: dict[str, tuple[int, list[Chain]]] = {}
        out: list[Chain] = []
        for chain_id, records in reversed(self.snapshot()):
            seen = self._drawn.get(chain_id)
            if seen is None or seen[0] != len(records):
                seen = (len(records), diagnose([redactor.record(r) for r in records]))
            drawn[chain_id] = seen
            out.extend(seen[1])
        self._drawn = drawn  # forgets the chains RecentChains let go
        return out

    # -- WSGI -------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _answer(start_response, "405 Method Not Allowed", "text/plain", b"GET only\n")
        filters = Filters.of(environ.get("QUERY_STRING", ""))
        if path == "/":
            nonce = secrets.token_urlsafe(16)
            return _answer(start_response, "200 OK", "text/html", self.page(filters, nonce).encode(), nonce)
        if path == "/chains":
            return _answer(start_response, "200 OK", "text/html", self.listing(filters).encode())
        if path == "/chains.json":
            chains = [c for c in self.chains() if filters.take(c)][: filters.limit]
            return _answer(start_response, "200 OK", "application/json", render_json(chains).encode())
        if path.startswith("/chain/") and path.endswith(".jsonl"):
            return self._records(path[len("/chain/"):-len(".jsonl")], start_response)
        if path == "/events":
            start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-store"),
                                      ("X-Accel-Buffering", "no")])
            return self.events()
        return _answer(start_response, "404 Not Found", "text/plain", b"not found\n")

    def _records(self, chain_id: str, start_response: Callable[..., Any]) -> Iterable[bytes]:
        records = next((r for c, r in self.snapshot() if c == chain_id), None)
        if records is None:
            return _answer(start_response, "404 Not Found", "text/plain",
                           b"no such chain here (it may have aged out of the recent chains)\n")
        redactor = self.redactor()
        body = "".join(json.dumps({"v": SCHEMA, **redactor.record(r)}, separators=(",", ":")) + "\n"
                       for r in records)
        name = "credhop-chain-" + "".join(ch for ch in chain_id if ch.isalnum() or ch in "-_")[:64] + ".jsonl"
        start_response("200 OK", [("Content-Type", "application/x-ndjson; charset=utf-8"),
                                  ("Content-Disposition", f'attachment; filename="{name}"'),
                                  ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")])
        return [body.encode()]  # redacted record by record, as the hop log writes them

    def events(self) -> Iterator[bytes]:
        """`data: VERSION` whenever the chains changed; a comment now and then; ends with the listener."""
        yield b"retry: 2000\n\n"
        shown, started, beat = None, time.monotonic(), time.monotonic()
        while not (self.closing is not None and self.closing.is_set()):
            now = time.monotonic()
            if now - started > EVENT_STREAM_MAX:
                return
            version = self.version()
            if version != shown:
                shown, beat = version, now
                yield f"data: {version}\n\n".encode()
            elif now - beat > EVENT_HEARTBEAT:
                beat = now
                yield b": still here\n\n"
            if self.closing is not None:
                self.closing.wait(EVENT_POLL)
            else:
                time.sleep(EVENT_POLL)

    # -- HTML -------------------------------------------------------------------------------------

    def listing(self, filters: Filters, chains: list[Chain] | None = None) -> str:
        chains = self.chains() if chains is None else chains
        shown = [c for c in chains if filters.take(c)]
        total = len(shown)
        shown = shown[: filters.limit]
        head = f'<p class="totals">{escaped(totals_line(shown))}'
        if total > len(shown):
            head += f" · the newest {len(shown)} of {total} shown (limit={filters.limit})"
        head += "</p>"
        body = "".join(chain_section(c, self._tools(c)) for c in shown)
        if not shown:
            body = ("<p>no chain matches these filters yet</p>" if chains else
                    "<p>no redirect chain yet: chains show here as clients follow redirects through this proxy</p>")
        return scrub(head + body)

    @staticmethod
    def _tools(chain: Chain) -> str:
        started = time.strftime("%H:%M:%S", time.localtime(chain.start)) if chain.start else "?"
        rules = sorted({h.rule for h in chain.hops if h.rule})
        rule = f" · rule {', '.join(escaped(r) for r in rules)}" if rules else ""
        href = "chain/" + quote(chain.id, safe="") + ".jsonl"
        return (f'<p class="tools">started {started}{rule} · '
                f'<a href="{escaped(href)}" download>records (JSON Lines, for credhop report)</a></p>')

    def page(self, filters: Filters, nonce: str) -> str:
        chains = self.chains()  # once: the filter form and the list both read it
        clients = sorted({c.client for c in chains})
        rules = sorted({h.rule for c in chains for h in c.hops if h.rule})
        codes = sorted({f.code for c in chains for f in c.findings})
        instance = self.instance()
        peers = "".join(f' <a href="{escaped(p)}">{escaped(p)}</a>' for p in self.peers())
        scope = (f"instance <b>{escaped(instance)}</b>: the chains this instance saw (the last "
                 f"{DEFAULT_LIMIT} by default); in a fleet, each instance shows its own")
        scope += f" · other instances:{peers}" if peers else ""
        form = ('<form class="bar" method="get">'
                f'<label><input type="checkbox" name="failed" value="1"{" checked" if filters.failed else ""}> '
                'failed only</label>'
                + _select("client", clients, filters.client) + _select("rule", rules, filters.rule)
                + _select("code", codes, filters.code)
                + f'<label>limit <input name="limit" size="4" value="{filters.limit}"></label>'
                '<button type="submit">apply</button> <a href="./">clear</a>'
                ' <span id="live" class="live off">connecting…</span></form>')
        query = urlencode({k: v for k, v in (("failed", "1" if filters.failed else ""), ("client", filters.client),
                                             ("rule", filters.rule), ("code", filters.code)) if v})
        json_link = f'<a href="chains.json{"?" + escaped(query) if query else ""}">JSON</a>'
        page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                '<meta name="viewport" content="width=device-width"><title>credhop: live chains</title>'
                f'<style>{PAGE_CSS}</style></head><body><header><h1>credhop: live chains</h1>'
                f'<p class="scope">{scope} · {json_link} · <a href="metrics">metrics</a></p>{LEGEND}{form}'
                f'</header><main id="chains">{self.listing(filters, chains)}</main>'
                f'<script nonce="{nonce}">{SCRIPT}</script></body></html>\n')
        return scrub(page)


def _select(name: str, values: list[str], chosen: str) -> str:
    options = "".join(f'<option value="{escaped(v)}"{" selected" if v == chosen else ""}>{escaped(v)}</option>'
                      for v in values)
    if chosen and chosen not in values:
        options += f'<option value="{escaped(chosen)}" selected>{escaped(chosen)}</option>'
    return f'<label>{name} <select name="{name}"><option value="">any</option>{options}</select></label>'


def _csp(nonce: str | None) -> str:
    # nothing from elsewhere; the one script only by its nonce; fetch and the event stream to this listener
    script = f"'nonce-{nonce}'" if nonce else "'none'"
    return (f"default-src 'none'; style-src 'unsafe-inline'; script-src {script}; connect-src 'self'; "
            "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def _answer(start_response: Callable[..., Any], status: str, kind: str, body: bytes,
            nonce: str | None = None) -> list[bytes]:
    start_response(status, [("Content-Type", f"{kind}; charset=utf-8"), ("Cache-Control", "no-store"),
                            ("Content-Security-Policy", _csp(nonce)), ("X-Content-Type-Options", "nosniff"),
                            ("Referrer-Policy", "no-referrer"), ("Content-Length", str(len(body)))])
    return [body]
