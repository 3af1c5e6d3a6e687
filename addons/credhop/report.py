"""Renders diagnosed chains as text (a tree, one hop a line), markdown or JSON.

Every string from the log is scrubbed again on the way out, and so is the whole
output: a secret that slipped into the log upstream still never reaches a report.
"""

from __future__ import annotations

import fnmatch
import html
import json
import re
from dataclasses import dataclass, replace
from typing import Any, Iterable
from urllib.parse import urlsplit

from .diagnosis import KINDS, REUSE_SHOWN, Chain, Finding, Hop, severity_rank
from .scrub import printable, scrub

VERDICT_MARK = {"failed": "✗ FAILED", "unknown": "? UNKNOWN", "ok": "✓ ok"}
ANSI = {"error": "31;1", "warning": "33", "info": "36", "failed": "31;1", "unknown": "33", "ok": "32",
        "dim": "2"}
VERDICTS = ("failed", "unknown", "ok")


# what json.dumps(ensure_ascii=False) writes raw but a terminal acts on (DEL, C1 controls such as CSI
# U+009B) or that reorders or hides text (bidi overrides, zero-width characters), and lone surrogates
_JSON_UNSAFE = re.compile(r"[\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff"
                          r"\ud800-\udfff]")



def hint_label(f: Finding) -> str:
    """'fix' for a problem; an info finding (what happened, such as a credential moved) gets a 'note'."""
    return "note" if f.severity == "info" else "fix"

def _s(value: Any) -> str:
    return printable(scrub(str(value)))


@dataclass(frozen=True, slots=True)
class Selection:
    """Which chains (and findings) to show; empty tuples mean no filter."""

    clients: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()  # globs, case-insensitive
    findings: tuple[str, ...] = ()  # codes
    severity: str | None = None  # show findings at or above this level, and only chains that have one

    def apply(self, chains: Iterable[Chain]) -> list[Chain]:
        shown = []
        for chain in chains:
            if self.clients and chain.client not in self.clients:
                continue
            hosts = {(urlsplit(o).hostname or "").lower() for o in chain.origins}
            if self.hosts and not any(fnmatch.fnmatchcase(h, g.lower()) for h in hosts for g in self.hosts):
                continue
            if self.findings and not any(f.code in self.findings for f in chain.findings):
                continue
            if self.severity:
                limit = severity_rank(self.severity)
                kept = [f for f in chain.findings if severity_rank(f.severity) <= limit]
                if not kept:
                    continue
                chain = _with_findings(chain, kept)
            shown.append(chain)
        return shown


def _with_findings(chain: Chain, findings: list[Finding]) -> Chain:
    hops = [replace(h, findings=[f for f in h.findings if f in findings]) for h in chain.hops]
    return Chain(chain.id, chain.client, hops, findings, chain.verdict)


def totals_line(chains: list[Chain]) -> str:
    counts = {v: sum(1 for c in chains if c.verdict == v) for v in VERDICTS}
    return f"{len(chains)} chain(s): " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS)


def summary_line(chain: Chain) -> str:
    """One line for an event log: the chain, its verdict, and its worst finding."""
    top = chain.findings[0] if chain.findings else None
    cause = f": {top.code} {top.name}: {top.message}" if top and top.severity != "info" else ""
    if not cause and chain.main:
        last = chain.main[-1]
        cause = f": {len(chain.main)} hop(s), {last.method} {last.url} -> {last.status}"
    return _s(f"credhop: chain {chain.id} (client {chain.client}) {chain.verdict}{cause}")


def credential_text(hop: Hop) -> str:
    """What happened to credentials on this hop, in a few words."""
    parts = []
    if hop.redirect and hop.fingerprint:
        if hop.observe:
            how = "capture replayed" if hop.replay else "observe only"
            did = f"would {hop.action} ({how}, rule {hop.rule})"
        elif hop.action == "keep":
            did = f"kept in Location ({hop.reason or f'rule {hop.rule}'})"
        else:
            done = {"inject": "moved into a header", "strip": "stripped", "block": "blocked"}
            did = f"{done.get(hop.action or '', hop.action)} (rule {hop.rule})"
        parts.append(f"Location credential {hop.user or '(token)'} {hop.fingerprint}: {did}")
    move, injected, skipped = hop.move, hop.injected, hop.skipped
    if move == "injected" and injected:
        who = f"{injected.get('user') or '(token)'} {injected.get('fingerprint')}"
        parts.append(f"{injected.get('header')} injected ({who})")
    elif move == "client-header" and skipped:
        parts.append(f"client sent its own {skipped.get('header')} (credhop did not inject)")
    elif move in ("leaked", "leak-stripped"):
        for leak in hop.leaks:
            done = "stripped by credhop" if leak.get("action") == "strip" else "LEAKED"
            parts.append(f"{leak.get('header')} {leak.get('fingerprint')} re-sent from "
                         f"{leak.get('came_from')} ({leak.get('kind')}): {done}")
    elif move in MOVE_WORDS:
        parts.append(MOVE_WORDS[move])
    if hop.sent and move not in ("injected", "leaked", "leak-stripped", "forwarded"):
        parts.append("sent " + ", ".join(s.label() for s in hop.sent))
    if hop.error:
        parts.append(f"failed: {hop.error}")
    if hop.superseded:
        parts.append("first try; the client retried")
    return "; ".join(parts)


MOVE_WORDS = {
    "forwarded": "client forwarded the Location's credential itself",
    "lost": "no credential sent: LOST",
    "stripped": "no credential sent (stripped by credhop)",
    "dropped": "no credential sent",
    "signed": "no client credential: the presigned URL carries its own",
}


# -- text ------------------------------------------------------------------------------------------


class Paint:
    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, style: str) -> str:
        return f"\x1b[{ANSI[style]}m{text}\x1b[0m" if self.color and style in ANSI else text


def _hop_line(hop: Hop, paint: Paint) -> str:
    status = str(hop.status) if hop.status is not None else "—"
    if hop.downloads:
        statuses = ", ".join(f"{n}× {code}" for code, n in sorted(hop.statuses.items()))
        head = f"{hop.downloads} × {hop.method} {hop.url} (downloads, {hop.bytes:,} bytes) → {statuses}"
    elif hop.reuse:
        head = f"{hop.method} {hop.url}" + (f" → {hop.status}" if hop.status is not None else "")
    else:
        head = f"#{hop.index} {hop.method} {hop.url} → {status}"
        if hop.redirect:
            head += f" → {hop.location or '(no Location)'}"
    codes = " ".join(paint(f.code, f.severity) for f in hop.findings)
    return " · ".join(p for p in (_s(head), _s(credential_text(hop)), codes) if p)


def _chain_text(chain: Chain, paint: Paint) -> list[str]:
    main = chain.main
    top = chain.findings[0] if chain.findings else None
    mark = paint(VERDICT_MARK[chain.verdict], chain.verdict)
    head = f"{mark} chain {_s(chain.id)} · client {_s(chain.client)}"
    if top and top.severity != "info":
        head += f" · {paint(f'{top.code} {top.name}', top.severity)}: {_s(top.message)}"
    elif main:
        end = main[-1]
        head += f" · {len(main)} hop(s), ends {_s(f'{end.method} {end.url}')} → {end.status or '—'}"
    lines = [head]
    reused: dict[int, list[Hop]] = {}
    for h in chain.hops:
        if h.reuse:
            reused.setdefault(h.index, []).append(h)
    for n, hop in enumerate(main):
        last = n == len(main) - 1
        lines.append(f"  {'└─' if last else '├─'} {_hop_line(hop, paint)}")
        # same-origin requests that reused the injected credential hang under their hop
        reuse = reused.get(hop.index, [])
        stem = "   " if last else "│  "
        shown = reuse[:REUSE_SHOWN]
        for m, extra in enumerate(shown):
            branch = "└─" if m == len(shown) - 1 and len(reuse) == len(shown) else "├─"
            lines.append(f"  {stem}{branch} {_hop_line(extra, paint)}")
        if len(reuse) > len(shown):
            lines.append(f"  {stem}└─ … {len(reuse) - len(shown)} more same-origin request(s)")
    for f in chain.findings:
        where = f" (hop {f.hop})" if f.hop is not None else ""
        label = f"{paint(f.severity.ljust(7), f.severity)} {paint(f.code, f.severity)} {f.name}{where}"
        lines.append(f"  {label}: {_s(f.message)}")
        lines.append(f"          {paint(hint_label(f) + ':', 'dim')} {_s(f.hint)}")
    return lines


def _malformed_note(malformed: list[int]) -> str:
    shown = ", ".join(map(str, malformed[:20])) + (", …" if len(malformed) > 20 else "")
    return f"skipped {len(malformed)} malformed line(s): {shown}"


def render_text(chains: list[Chain], color: bool = False, malformed: list[int] | None = None) -> str:
    """Each chain as a tree, worst chains first, so the first line names the worst chain's cause."""
    paint = Paint(color)
    blocks = ["\n".join(_chain_text(chain, paint)) for chain in chains]
    footer = [totals_line(chains) if chains else "no redirect chains in the hop log"]
    if malformed:
        footer.append(_malformed_note(malformed))
    return scrub("\n\n".join(blocks + ["\n".join(footer)]) + "\n")


# -- markdown --------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    # markdown renders HTML: a capture's `<script>` or `<img onerror=…>` must stay text
    return html.escape(_s(text), quote=False).replace("|", "\\|").replace("\n", " ")


def render_markdown(chains: list[Chain], malformed: list[int] | None = None) -> str:
    out = ["# credhop report", "", totals_line(chains), ""]
    if malformed:
        out += [_malformed_note(malformed), ""]
    for chain in chains:
        chain_id = _cell(chain.id).replace("`", "'")  # from the hop log: it must not close the code span
        out += [f"## {VERDICT_MARK[chain.verdict]} chain `{chain_id}`, client {_cell(chain.client)}", ""]
        if chain.findings:
            top = chain.findings[0]
            out += [f"**{top.code} {top.name}** ({top.severity}): {_cell(top.message)}", ""]
        out += ["| hop | request | status | credential | findings |", "| --- | --- | --- | --- | --- |"]
        for hop in chain.hops:
            status = str(hop.status) if hop.status is not None else "—"
            if hop.redirect:
                status += f" → {hop.location or '(no Location)'}"
            label = f"{hop.index}" + (" (same origin)" if hop.reuse else "")
            codes = " ".join(f.code for f in hop.findings)
            out.append(f"| {label} | {_cell(f'{hop.method} {hop.url}')} | {_cell(status)} | "
                       f"{_cell(credential_text(hop))} | {codes} |")
        out.append("")
        for f in chain.findings:
            where = f" (hop {f.hop})" if f.hop is not None else ""
            out.append(f"- **{f.severity}** `{f.code}` {f.name}{where}: {_cell(f.message)}  ")
            out.append(f"  *{hint_label(f).capitalize()}:* {_cell(f.hint)}")
        out.append("")
    return scrub("\n".join(out).rstrip() + "\n")


# -- json ------------------------------------------------------------------------------------------


def _finding_json(f: Finding) -> dict[str, Any]:
    return {"code": f.code, "name": f.name, "severity": f.severity, "message": f.message, "hint": f.hint,
            "hop": f.hop}


def _hop_json(h: Hop) -> dict[str, Any]:
    return {
        "hop": h.index, "reuse": h.reuse, "method": h.method, "url": h.url, "status": h.status,
        "location": h.location, "target": h.target, "action": h.action, "rule": h.rule,
        "reason": h.reason, "observe": h.observe, "user": h.user, "fingerprint": h.fingerprint,
        "move": h.move, "credential": credential_text(h), "error": h.error,
        "sent": [{"header": s.header, "scheme": s.scheme, "fingerprint": s.fingerprint,
                  "injected": s.injected} for s in h.sent],
        "findings": [f.code for f in h.findings],
        **({"downloads": h.downloads, "bytes": h.bytes, "statuses": h.statuses} if h.downloads else {}),
    }


def chain_json(chain: Chain) -> dict[str, Any]:
    return {"chain": chain.id, "client": chain.client, "verdict": chain.verdict, "origins": chain.origins,
            "findings": [_finding_json(f) for f in chain.findings],
            "hops": [_hop_json(h) for h in chain.hops]}


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    return value


def render_json(chains: list[Chain], malformed: list[int] | None = None) -> str:
    counts = {v: sum(1 for c in chains if c.verdict == v) for v in VERDICTS}
    doc = {"chains": [chain_json(c) for c in chains], "summary": {"chains": len(chains), **counts},
           "malformed_lines": malformed or [], "codes": {k.code: k.name for k in KINDS.values()}}
    text = json.dumps(_scrubbed(doc), indent=2, ensure_ascii=False)
    # outside strings JSON is ASCII: a \uXXXX escape of these is the same value to a parser, and inert
    # on a terminal that `credhop report --format json` writes to
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m[0]):04x}", text) + "\n"
