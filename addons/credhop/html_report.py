"""One self-contained HTML page that draws each chain as a sequence diagram.

Lanes are the client and the origins it talked to; each hop is a request arrow
from the client to an origin and a response arrow back, top to bottom, with the
credential's move (injected, stripped, leaked, lost) marked on the request. The
SVG is built here, so the diagram is in the DOM without scripts, and a
Content-Security-Policy forbids every network fetch.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

from .diagnosis import REUSE_SHOWN, Chain, Finding, Hop
from .report import VERDICT_MARK, credential_text, hint_label, totals_line
from .scrub import printable, scrub

LANE_W, ROW_H, HEAD_H, CODES_W, PAD = 250, 78, 64, 110, 16
CHAR_W = 7.2  # px per character of the 11.5px monospace labels, for truncating them
MOVE_LABEL = {
    "injected": "injected", "forwarded": "forwarded by client",
    "client-credential": "client's own credential", "client-header": "client's own header",
    "stripped": "stripped", "lost": "no credential: LOST", "dropped": "not sent", "leaked": "LEAKED",
    "leak-stripped": "leak stripped", "signed": "signed URL: its own authorization",
}
CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1d232b;
 background:#f6f7f9}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:0 0 10px}
code,.mono{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:12.5px}
.totals{color:#4a5563;margin:0 0 18px}
.legend span{display:inline-block;padding:1px 8px;border-radius:9px;margin-right:6px;font-size:12px;
 color:#fff}
.chain{background:#fff;border:1px solid #d8dde3;border-left:6px solid #8a96a3;border-radius:6px;
 padding:14px 16px;margin:0 0 20px}
.verdict-failed{border-left-color:#c62828}.verdict-ok{border-left-color:#2e7d32}
.verdict-unknown{border-left-color:#e0a100}
.cause{margin:0 0 10px;font-weight:600}
.body{display:flex;gap:18px;align-items:flex-start;flex-wrap:wrap}
.diagram{margin:0;overflow-x:auto;flex:0 1 auto}
.findings{flex:1 1 340px;min-width:300px;margin:0;padding:0;list-style:none}
.finding{border-left:4px solid #8a96a3;padding:4px 10px;margin:0 0 10px;background:#fafbfc}
.finding .fix{color:#4a5563}
.sev-error{border-left-color:#c62828}.sev-warning{border-left-color:#e0a100}.sev-info{border-left-color:#1976d2}
.pill{display:inline-block;border-radius:9px;padding:0 7px;font-size:11.5px;color:#fff;margin-right:4px}
.p-error{background:#c62828}.p-warning{background:#b27d00}.p-info{background:#1976d2}
svg text{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:11.5px;fill:#1d232b}
svg .lane-label{font-family:system-ui,sans-serif;font-size:12px;font-weight:600}
svg .lifeline{stroke:#aab3bd;stroke-dasharray:4 4}
svg .request{stroke:#37474f;stroke-width:1.6}
svg .response{stroke:#78909c;stroke-width:1.3;stroke-dasharray:6 3}
svg .response.s-err{stroke:#c62828}svg .response.s-ok{stroke:#2e7d32}
svg .move rect{rx:8}
svg .move text{fill:#fff;font-size:11px;font-weight:600}
svg .move-injected rect,svg .move-forwarded rect{fill:#2e7d32}
svg .move-lost rect,svg .move-leaked rect{fill:#c62828}
svg .move-stripped rect,svg .move-dropped rect,svg .move-leak-stripped rect{fill:#6d7780}
svg .move-client-credential rect,svg .move-client-header rect{fill:#b27d00}
svg .move-signed rect{fill:#1976d2}
svg .loc-credential rect{fill:#fff3e0;stroke:#e08a00}
svg .loc-credential text{fill:#8a4b00;font-size:11px}
svg .code rect{rx:4}svg .code text{fill:#fff;font-size:11px;font-weight:700}
svg .code-error rect{fill:#c62828}svg .code-warning rect{fill:#b27d00}svg .code-info rect{fill:#1976d2}
"""
LEGEND = ('<p class="legend">credential on the request: <span style="background:#2e7d32">injected</span>'
          '<span style="background:#c62828">lost / leaked</span>'
          '<span style="background:#6d7780">stripped / not sent</span>'
          '<span style="background:#b27d00">client\'s own</span></p>')
CSP = "default-src 'none'; style-src 'unsafe-inline'"  # nothing may be fetched: no scripts, fonts, images


def escaped(text: object) -> str:
    """Text from the network, for HTML: secrets scrubbed, control characters shown, markup escaped."""
    return html.escape(printable(scrub(str(text))), quote=True)


def _short(text: str, limit: int) -> str:
    text = scrub(text)  # before cutting: a cut can hide the "@" that marks userinfo
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _path(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class _Diagram:
    """The SVG of one chain, built row by row: one row per request."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        main = chain.main
        # a redirect nobody followed still points somewhere: draw where, as a ghost row
        self.unfollowed = main[-1] if main and main[-1].redirect and main[-1].target else None
        targets = [self.unfollowed.target] if self.unfollowed and self.unfollowed.target else []
        self.lanes = [f"client {chain.client}", *dict.fromkeys([*chain.origins, *targets])]
        self.rows = [h for h in chain.hops if not h.reuse or self._reuse_rank(h) < REUSE_SHOWN]
        self.width = LANE_W * len(self.lanes) + CODES_W
        self.height = HEAD_H + ROW_H * (len(self.rows) + (self.unfollowed is not None)) + PAD
        self.uid = re.sub(r"[^A-Za-z0-9_-]", "", chain.id) or "chain"
        self.arrow = f'marker-end="url(#arr-{self.uid})"'
        self.out: list[str] = []

    def _reuse_rank(self, hop: Hop) -> int:
        return [h for h in self.chain.hops if h.reuse and h.index == hop.index].index(hop)

    def x(self, lane: int) -> float:
        return LANE_W * lane + LANE_W / 2

    def render(self) -> str:
        w, h, cid = self.width, self.height, escaped(self.chain.id)
        self.out.append(
            f'<svg class="chain-diagram" data-chain="{cid}" xmlns="http://www.w3.org/2000/svg" width="{w}" '
            f'height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="redirect chain {cid}">'
            f'<defs><marker id="arr-{self.uid}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="#37474f"/></marker>'
            '</defs>')
        for i, lane in enumerate(self.lanes):
            x = self.x(i)
            self.out.append(
                f'<g class="lane" data-origin="{escaped(lane)}"><rect x="{x - LANE_W / 2 + 8}" y="8" '
                f'width="{LANE_W - 16}" height="30" rx="5" fill="#eef1f4" stroke="#c5ccd4"/>'
                f'<text class="lane-label" x="{x}" y="28" text-anchor="middle">{escaped(_short(lane, 36))}</text>'
                f'<line class="lifeline" x1="{x}" y1="38" x2="{x}" y2="{h - 6}"/></g>')
        for row, hop in enumerate(self.rows):
            self._hop(row, hop)
        if self.unfollowed:
            self._ghost(len(self.rows), self.unfollowed)
        self.out.append("</svg>")
        return "".join(self.out)

    def _hop(self, row: int, hop: Hop) -> None:
        y = HEAD_H + row * ROW_H
        lane = self.lanes.index(hop.origin) if hop.origin in self.lanes else 1
        x0, x1 = self.x(0), self.x(lane)
        room = int((x1 - x0) / CHAR_W)
        label = ("↳ " if hop.reuse else f"#{hop.index} ") + f"{hop.method} {_path(hop.url)}"
        title = f"{hop.method} {hop.url} — {credential_text(hop) or 'no credential'}"
        g = [f'<g class="hop{" reuse" if hop.reuse else ""}" data-hop="{hop.index}" '
             f'data-move="{escaped(hop.move or "")}"><title>{escaped(title)}</title>',
             f'<text x="{x0 + 8}" y="{y + 10}">{escaped(_short(label, room))}</text>',
             f'<line class="request" x1="{x0}" y1="{y + 20}" x2="{x1 - 2}" y2="{y + 20}" {self.arrow}/>']
        if hop.move in MOVE_LABEL:
            text = MOVE_LABEL[hop.move]
            if hop.move == "injected" and hop.injected:
                text = f"{hop.injected.get('header')} injected"
            w = 7 * len(text) + 14
            mx = x1 - w - 16  # next to the arrowhead: the move happens on the way into that origin
            g.append(f'<g class="move move-{hop.move}"><rect x="{mx}" y="{y + 13}" width="{w}" height="16"/>'
                     f'<text x="{mx + 7}" y="{y + 25}">{escaped(text)}</text></g>')
        status = hop.status
        if status is not None or hop.error:
            bad = hop.error or (status or 0) >= 400
            cls = "s-err" if bad else ("s-ok" if status and status < 300 else "")
            answer = f"{status}" if status is not None else f"failed: {hop.error}"
            if hop.redirect:
                answer += f" → {hop.location or '(no Location)'}"
            # cut to the room there is; the whole answer (a long Location) shows on hovering it
            g.append(f'<line class="response {cls}" x1="{x1}" y1="{y + 46}" x2="{x0 + 2}" y2="{y + 46}" '
                     f'{self.arrow}/><text class="answer" x="{x0 + 8}" y="{y + 62}"><title>{escaped(answer)}</title>'
                     f'{escaped(_short(answer, room + 8))}</text>')
        if hop.redirect and hop.fingerprint:
            text = f"credential in Location: {hop.user or '(token)'}"
            w = 6.6 * len(text) + 12
            g.append(f'<g class="loc-credential"><rect x="{x1 - w - 6}" y="{y + 30}" width="{w}" height="15" '
                     f'rx="3"/><text x="{x1 - w}" y="{y + 41}">{escaped(text)}</text></g>')
        cx = LANE_W * len(self.lanes) + 6
        for f in hop.findings[:4]:
            g.append(f'<g class="code code-{f.severity}" data-code="{f.code}"><title>{escaped(f.name)}</title>'
                     f'<rect x="{cx}" y="{y + 10}" width="48" height="17"/>'
                     f'<text x="{cx + 5}" y="{y + 23}">{f.code}</text></g>')
            cx += 52
        g.append("</g>")
        self.out.extend(g)

    def _ghost(self, row: int, hop: Hop) -> None:
        y = HEAD_H + row * ROW_H
        x0, x1 = self.x(0), self.x(self.lanes.index(hop.target or ""))
        self.out.append(
            f'<g class="hop ghost" data-hop="{hop.index + 1}" data-move="not-seen">'
            f'<title>the follow-up of hop {hop.index} never came through the proxy</title>'
            f'<text x="{x0 + 8}" y="{y + 10}" fill-opacity="0.6">#{hop.index + 1} follow-up not seen</text>'
            f'<line class="request" x1="{x0}" y1="{y + 20}" x2="{x1 - 2}" y2="{y + 20}" '
            f'stroke-dasharray="2 5" stroke-opacity="0.5" {self.arrow}/></g>')


def _finding_item(f: Finding) -> str:
    where = f" · hop {f.hop}" if f.hop is not None else ""
    return (f'<li class="finding sev-{f.severity}" data-code="{f.code}">'
            f'<span class="pill p-{f.severity}">{f.severity}</span><code>{f.code}</code> <b>{escaped(f.name)}</b>'
            f'{where}<br>{escaped(f.message)}<div class="fix">{hint_label(f)}: {escaped(f.hint)}</div></li>')


def chain_section(chain: Chain, tools: str = "") -> str:
    """One chain: its verdict, cause, diagram and findings; `tools` is trusted HTML put under the heading."""
    top = chain.findings[0] if chain.findings else None
    cause = ""
    if top and top.severity != "info":
        cause = f'<p class="cause">{top.code} {escaped(top.name)}: {escaped(top.message)}</p>'
    findings = "".join(_finding_item(f) for f in chain.findings) or '<li class="finding">no findings</li>'
    return (f'<section class="chain verdict-{chain.verdict}" id="chain-{escaped(chain.id)}" '
            f'data-verdict="{chain.verdict}"><h2>{escaped(VERDICT_MARK[chain.verdict])} · chain '
            f'<code>{escaped(chain.id)}</code> · client {escaped(chain.client)}</h2>{tools}{cause}<div class="body">'
            f'<figure class="diagram">{_Diagram(chain).render()}</figure><ol class="findings">{findings}</ol>'
            '</div></section>')


def render_html(chains: list[Chain], malformed: list[int] | None = None, source: str | None = None) -> str:
    totals = totals_line(chains) + (f" · {len(malformed)} malformed line(s) skipped" if malformed else "")
    body = "".join(chain_section(c) for c in chains) or "<p>no redirect chains in the hop log</p>"
    page = ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            '<meta name="viewport" content="width=device-width"><title>credhop report</title>'
            f'<style>{CSS}</style></head><body><header><h1>credhop report</h1>'
            f'<p class="totals">{escaped(source) + " · " if source else ""}{totals}</p>{LEGEND}</header>'
            f'<main>{body}</main></body></html>\n')
    return scrub(page)
