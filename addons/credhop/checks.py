"""The checks: given a built chain, decide what happened to the credential on each hop (`Hop.move`),
yield the findings of every `_check_*`, attach them to their hops and give the chain its verdict
(`_assess`). Also `_Grants`, the credentials credhop held across chains, to tell a TTL that ran out.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterator
from urllib.parse import urlsplit

from .chains import Chain, Hop, _str, origin_of
from .findings import MAX_HOPS, Finding, _f, severity_rank
from .records import Action, Why

DENIED = frozenset((401, 403, 404))  # what registries answer a request without (valid) credentials


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
        if _userinfo_left_to_client(last):
            yield _userinfo_in_request_line(last)
        else:
            yield _f("CH502", f"nothing shows the client following hop {last.index}'s {last.status} to "
                     f"{last.target}",
                     "the client stopped (see its output), bypassed the proxy for that host (NO_PROXY), or "
                     "mitmproxy refused its request (uv 0.5.25 through an http:// proxy puts kept userinfo "
                     "into the request line: 400 Bad Request)", last.index)


def _userinfo_left_to_client(hop: Hop) -> bool:
    """A live proxy only observing a redirect whose Location credential a rule would have taken out, to a
    plaintext origin: the client got the userinfo and had to send it itself. Through an http:// proxy it
    goes into the absolute request line (`GET http://user:secret@host/`), which mitmproxy refuses with 400
    before any addon sees a flow: so no follow-up shows here, and the chain failed (uv 0.5.25, issue 26).
    Not for captures replayed: no proxy of ours refused anything there, and browsers simply stop."""
    return (hop.observe and not hop.replay and bool(hop.fingerprint)
            and hop.action in (Action.INJECT, Action.STRIP) and (hop.target or "").startswith("http://"))


def _userinfo_in_request_line(hop: Hop) -> Finding:
    rule = f"rule {hop.rule}" if hop.rule else "the matching rule"
    does = ("injects it into a header for that origin" if hop.action == Action.INJECT
            else "strips it from the Location (action: inject also moves it into a header)")
    return _f("CH503", f"the follow-up of hop {hop.index}'s {hop.status} to {hop.target} never reached "
              f"credhop: it only observed, so the client had to send the Location's credential "
              f"({hop.credential_label}) itself, and a client that keeps it puts it into its request line to "
              "the proxy, which mitmproxy refuses (400 Bad Request; uv 0.5.25 does)",
              f"turn observe mode off (credhop_observe=false): {rule} then {does} and the client never holds "
              "it; the client's own output may show the secret (uv 0.5.25 prints the URL with it): keep that "
              "output out of shared logs, or rotate the credential", hop.index)


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
