"""Findings on hand-written hop-log records: every code, where it must show and where it must not."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urljoin

import pytest

from credhop.diagnosis import CATALOGUE, KINDS, MAX_HOPS, diagnose, kind_of, parse_records
from credhop.scrub import scrub

A = "https://redirector.example/simple/pkg/"
B = "https://registry.example/pypi/simple/pkg/"
FP = "hm:0123456789abcdef"
OTHER_FP = "hm:ffff000011112222"
LOC = "https://aws:***@registry.example/pypi/simple/pkg/"  # a redacted Location with a credential


class Log:
    """Builds the records of one chain the way the addon writes them."""

    def __init__(self, chain: str = "c1", client: str = "10.0.0.5", t0: float = 1000.0) -> None:
        self.chain, self.client, self.t = chain, client, t0
        self.records: list[dict[str, Any]] = []
        self._flow = 0

    def _add(self, event: str, hop: int, method: str, url: str, flow: str | None = None,
             **fields: Any) -> str:
        self.t += 0.01
        if flow is None:
            self._flow += 1
            flow = f"{self.chain}-f{self._flow}"
        self.records.append({"v": 1, "ts": self.t, "event": event, "client": self.client, "chain": self.chain,
                             "hop": hop, "flow": flow, "method": method, "url": url, **fields})
        return flow

    def redirect(self, hop: int, url: str, location: str | None, target: str | None = None, status: int = 302,
                 method: str = "GET", credential: bool = False, action: str = "none", **fields: Any) -> str:
        extra: dict[str, Any] = {"status": status, "action": action}
        if location is not None:
            absolute = urljoin(url, location)
            extra.update(location=location, target=target or origin(absolute), relative="://" not in location)
        if credential:
            extra.update(user="aws", fingerprint=FP, rule="default")
        return self._add("redirect", hop, method, url, **{**extra, **fields})

    def response(self, hop: int, url: str, status: int, sent: list[dict[str, Any]] | None = None,
                 method: str = "GET", flow: str | None = None) -> str:
        return self._add("response", hop, method, url, flow=flow, status=status, sent=sent)

    def inject(self, hop: int, url: str, action: str = "inject", method: str = "GET", flow: str | None = None,
               **fields: Any) -> str:
        return self._add("inject", hop, method, url, flow=flow, rule="default", header="Authorization",
                         user="aws", fingerprint=FP, action=action, **fields)

    def leak(self, hop: int, url: str, kind: str, action: str = "log", flow: str | None = None) -> str:
        return self._add("leak", hop, "GET", url, flow=flow, header="authorization", fingerprint=OTHER_FP,
                         kind=kind, came_from=origin(A), target=origin(url), action=action)

    def error(self, hop: int, url: str, reason: str) -> str:
        return self._add("error", hop, "GET", url, reason=reason)


def origin(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0].split('@')[-1]}"


INJECTED = [{"header": "authorization", "scheme": "Basic", "fingerprint": FP, "injected": True}]
OWN = [{"header": "authorization", "scheme": "Basic", "fingerprint": OTHER_FP, "injected": False}]


def codes(*logs: Log) -> set[str]:
    return {f.code for chain in diagnose([r for log in logs for r in log.records]) for f in chain.findings}


# -- one builder per scenario: (produces, must not produce) -----------------------------------------


def lost_observe() -> Log:  # the uv 0.5.25 case, credhop observing
    log = Log()
    log.redirect(0, A, LOC, credential=True, action="inject",
                 observe=True)
    log.response(1, B, 404)
    return log


def injected_ok() -> Log:
    log = Log()
    log.redirect(0, A, LOC, credential=True, action="inject", ttl=600)
    flow = log.inject(1, B)
    log.response(1, B, 200, INJECTED, flow=flow)
    log.inject(1, "https://registry.example/pypi/files/pkg-1.0-py3-none-any.whl")
    return log


def injected_rejected() -> Log:
    log = Log()
    log.redirect(0, A, LOC, credential=True, action="inject", ttl=600)
    flow = log.inject(1, B)
    log.response(1, B, 401, INJECTED, flow=flow)
    return log


def no_credential_404() -> Log:
    log = Log()
    log.redirect(0, A, B)
    log.response(1, B, 404)
    return log


def server_error() -> Log:
    log = Log()
    log.redirect(0, A, B)
    log.response(1, B, 500)
    return log


def leak(kind: str, url: str, action: str = "log") -> Log:
    log = Log()
    log.redirect(0, A, url, sent=OWN)
    flow = log.leak(1, url, kind, action)
    log.response(1, url, 200, OWN, flow=flow)
    return log


def plain_redirect(frm: str = A, to: str = B, status: int = 302, method: str = "GET",
                   next_method: str = "GET", **fields: Any) -> Log:
    log = Log()
    log.redirect(0, frm, to, status=status, method=method, **fields)
    log.response(1, urljoin(frm, to), 200, method=next_method)
    return log


def hops(n: int, loop: bool = False) -> Log:
    log = Log()
    for i in range(n):
        here, there = f"https://h.example/{i}", f"https://h.example/{0 if loop else i + 1}"
        log.redirect(i, here, there)
    if not loop:
        log.response(n, f"https://h.example/{n}", 200)
    return log


def bounce() -> Log:
    """A login or cookie bounce: the same URL comes back once, then answers."""
    log = Log()
    log.redirect(0, A, A)
    log.response(1, A, 200)
    return log


def location_problem(reason: str) -> Log:
    log = Log()
    log.redirect(0, A, None, action="none", reason=reason)
    return log


def refused(reason: str, action: str = "keep") -> Log:
    log = Log()
    log.redirect(0, A, "http://aws:***@registry.example/simple/pkg/", credential=True, action=action,
                 reason=reason)
    log.response(1, "http://registry.example/simple/pkg/", 401)
    return log


def skipped() -> Log:
    log = Log()
    log.redirect(0, A, LOC, credential=True, action="inject", ttl=600)
    flow = log.inject(1, B, action="skip", reason="client sent its own Authorization")
    log.response(1, B, 200, OWN, flow=flow)
    return log


def ttl_logs(gap: float) -> tuple[Log, Log]:
    first = Log("c1")
    first.redirect(0, A, LOC, credential=True, action="inject", ttl=5)
    flow = first.inject(1, B)
    first.response(1, B, 200, INJECTED, flow=flow)
    second = Log("c2", t0=first.t + gap)
    second.redirect(0, "https://redirector.example/simple/other/", "https://registry.example/pypi/simple/other/")
    if gap <= 5:
        flow = second.inject(1, "https://registry.example/pypi/simple/other/")
        second.response(1, "https://registry.example/pypi/simple/other/", 200, INJECTED, flow=flow)
    else:
        second.response(1, "https://registry.example/pypi/simple/other/", 401)
    return first, second


def blocked(observe: bool = False) -> Log:
    log = Log()
    log.redirect(0, A, LOC, credential=True, action="block",
                 rule="no-tokens", observe=observe)
    return log


def failed_follow_up() -> Log:
    log = Log()
    log.redirect(0, A, "https://registry.example:9/simple/")
    log.error(1, "https://registry.example:9/simple/", "Connection refused")
    return log


def unfollowed() -> Log:
    log = Log()
    log.redirect(0, A, LOC, credential=True, action="keep",
                 reason="no rule matched")
    return log


def observed_plaintext_unfollowed(target: str = "http://registry.example", action: str = "inject",
                                  **fields: Any) -> Log:
    """uv 0.5.25 through an http:// proxy, credhop observing: its follow-up kept the userinfo in the
    request line, mitmproxy refused it with 400, and no record followed (issue 26)."""
    log = Log()
    scheme = target.split(":", 1)[0]
    log.redirect(0, A.replace("https:", f"{scheme}:"), f"{scheme}://aws:***@registry.example/pypi/simple/pkg/",
                 target=target, credential=True, action=action, **{"observe": True, **fields})
    return log


# a presigned URL as a hop log holds it once its signing values are redacted
SIGNED = ("https://bucket.s3.example/pkg-1.0-py3-none-any.whl?X-Amz-Algorithm=AWS4-HMAC-SHA256"
          "&X-Amz-Credential=***&X-Amz-Date=20261202T000000Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host"
          "&X-Amz-Signature=***")


def signed_download(status: int = 200, auth: bool = False, action: str = "log") -> Log:
    """A download the registry redirects to a presigned URL; with `auth` the client re-sends Authorization."""
    log = Log()
    log.redirect(0, "https://registry.example/pypi/files/pkg-1.0-py3-none-any.whl", SIGNED,
                 sent=OWN if auth else None)
    flow = log.leak(1, SIGNED, "other-host", action) if auth else None
    log.response(1, SIGNED, status, OWN if auth and action == "log" else None, flow=flow)
    return log


CASES: dict[str, tuple[list[Log], list[Log]]] = {
    "CH101": ([lost_observe()], [injected_ok(), injected_rejected(), no_credential_404()]),
    "CH102": ([injected_rejected()], [lost_observe(), injected_ok()]),
    "CH103": ([no_credential_404()], [lost_observe(), injected_ok()]),
    "CH104": ([server_error()], [no_credential_404(), injected_ok()]),
    "CH110": ([lost_observe(), injected_ok()], [no_credential_404()]),
    "CH201": ([leak("other-host", "https://other.example/x")],
              [leak("other-host", "https://other.example/x", "strip"), leak("other-port", "https://redirector.example:8443/x")]),
    "CH202": ([leak("other-port", "https://redirector.example:8443/x")], [leak("other-host", "https://other.example/x")]),
    "CH203": ([leak("scheme-downgrade", "http://other.example/x")],
              [leak("other-port", "https://redirector.example:8443/x"),
               leak("scheme-downgrade", "http://o.example/", "strip")]),
    "CH204": ([leak("other-host", "https://other.example/x", "strip")], [leak("other-host", "https://other.example/x")]),
    "CH205": ([signed_download(400, auth=True)],
              [signed_download(), signed_download(auth=True, action="strip"), signed_download(403),
               leak("other-host", "https://other.example/x")]),
    "CH301": ([plain_redirect(to="http://registry.example/simple/")],
              [plain_redirect(), plain_redirect(frm="http://a.example/", to="http://b.example/")]),
    "CH302": ([hops(3, loop=True), hops(1, loop=True)], [hops(3), plain_redirect(), bounce()]),
    "CH303": ([hops(MAX_HOPS + 1)], [hops(MAX_HOPS)]),
    "CH304": ([location_problem("no Location header"), location_problem("2 Location headers")],
              [location_problem("unparseable Location 'http://[x'"), plain_redirect()]),
    "CH305": ([location_problem("unparseable Location 'http://[x'"),
               location_problem("Location scheme 'ftp' is not http or https")],
              [location_problem("no Location header"), plain_redirect()]),
    "CH306": ([plain_redirect(to="../other/")], [plain_redirect()]),
    "CH307": ([plain_redirect(status=302, method="POST"), plain_redirect(status=303, method="PUT")],
              [plain_redirect(status=307, method="POST", next_method="POST"), plain_redirect(status=302),
               plain_redirect(status=301, method="HEAD", next_method="HEAD")]),
    "CH308": ([plain_redirect(to="https://registry.example/pypi//simple/"), plain_redirect(to="/a//b")],
              [plain_redirect(), plain_redirect(to="https://registry.example/a/b?next=//x")]),
    "CH401": ([skipped()], [injected_ok()]),
    "CH402": ([*ttl_logs(10)], [*ttl_logs(2)]),
    "CH403": ([refused("plaintext http destination; set allow_plaintext on the rule to permit")],
              [injected_ok()]),
    "CH404": ([refused("WHATWG and urllib parsers disagree on where this Location goes")], [injected_ok()]),
    "CH405": ([refused("no rule matched")],
              [injected_ok(), refused("control character in decoded userinfo")]),
    "CH406": ([refused("control character in decoded userinfo")],
              [refused("no rule matched"), injected_ok()]),
    "CH407": ([blocked()], [blocked(observe=True), injected_ok()]),
    "CH408": ([refused("https://registry.example already holds a live credential handed out by https://b.example",
                       action="keep")], [injected_ok(), refused("no rule matched")]),
    "CH501": ([failed_follow_up()], [injected_ok()]),
    "CH502": ([unfollowed(), observed_plaintext_unfollowed("https://registry.example"),
               observed_plaintext_unfollowed(replay=True)],
              [injected_ok(), hops(3, loop=True), blocked(), location_problem("no Location header"),
               observed_plaintext_unfollowed()]),
    "CH503": ([observed_plaintext_unfollowed(), observed_plaintext_unfollowed(action="strip")],
              [unfollowed(), lost_observe(), injected_ok(),
               observed_plaintext_unfollowed("https://registry.example"),
               observed_plaintext_unfollowed(replay=True), observed_plaintext_unfollowed(observe=False),
               observed_plaintext_unfollowed(action="keep", reason="no rule matched")]),
}


def test_every_code_has_cases():
    assert set(CASES) == {k.code for k in CATALOGUE}


@pytest.mark.parametrize("code", sorted(CASES))
def test_finding_is_produced(code):
    for log in CASES[code][0]:
        assert code in codes(log) or (code == "CH402" and code in codes(*CASES[code][0])), log.records
    if code == "CH402":
        assert code in codes(*CASES[code][0])


@pytest.mark.parametrize("code", sorted(CASES))
def test_finding_is_not_produced(code):
    negatives = CASES[code][1]
    if code == "CH402":
        assert code not in codes(*negatives)
        return
    for log in negatives:
        assert code not in codes(log), log.records


# -- the story a chain tells ---------------------------------------------------------------------------


def test_uv_observe_case_puts_the_lost_credential_first():
    [chain] = diagnose(lost_observe().records)
    assert chain.verdict == "failed"
    top = chain.findings[0]
    assert (top.code, top.name, top.severity, top.hop) == ("CH101", "credential-lost-on-redirect", "error", 1)
    assert "404 without a credential" in top.message and FP in top.message
    assert "credhop_observe" in top.hint and "rule default" in top.hint
    assert [h.move for h in chain.main] == [None, "lost"]


def test_successful_injection_is_ok_and_later_requests_are_reuse():
    [chain] = diagnose(injected_ok().records)
    assert chain.verdict == "ok"
    assert [f.code for f in chain.findings] == ["CH110"]
    assert [(h.index, h.reuse, h.move) for h in chain.hops] == [(0, False, None), (1, False, "injected"),
                                                                (1, True, "injected")]


def test_records_marked_reuse_never_become_the_follow_up():
    log = injected_ok()
    wheel = log.records[-1]
    log.records.insert(1, {**wheel, "event": "response", "status": 403, "reuse": True, "ts": 999.0})
    [chain] = diagnose(log.records)
    assert [(h.index, h.status) for h in chain.main] == [(0, 302), (1, 200)]  # although the 403 came first
    assert (1, True, 403) in [(h.index, h.reuse, h.status) for h in chain.hops]
    # the index page worked, but a later download was refused: that is what failed
    assert chain.verdict == "failed" and "CH102" in {f.code for f in chain.findings}


def test_ttl_case_names_the_expiry_and_the_loss():
    chains = diagnose([r for log in ttl_logs(10) for r in log.records])
    second = next(c for c in chains if c.id == "c2")
    assert {"CH101", "CH402"} <= {f.code for f in second.findings}
    assert second.verdict == "failed"
    assert "TTL" in next(f for f in second.findings if f.code == "CH402").message


def test_leak_stripped_is_a_warning_and_the_chain_is_ok():
    [chain] = diagnose(leak("other-host", "https://other.example/x", "strip").records)
    assert chain.verdict == "ok" and chain.worst == "warning"
    assert chain.main[1].move == "leak-stripped"


def test_verdicts():
    assert diagnose(unfollowed().records)[0].verdict == "unknown"
    assert diagnose(observed_plaintext_unfollowed().records)[0].verdict == "failed"
    assert diagnose(observed_plaintext_unfollowed("https://registry.example").records)[0].verdict == "unknown"
    assert diagnose(blocked().records)[0].verdict == "failed"
    assert diagnose(failed_follow_up().records)[0].verdict == "failed"
    assert diagnose(server_error().records)[0].verdict == "failed"


def test_chains_are_worst_first_and_grouped_by_chain_and_client():
    ok, bad = injected_ok(), lost_observe()
    for r in bad.records:
        r["chain"] = "c9"
    chains = diagnose(ok.records + bad.records)
    assert [c.id for c in chains] == ["c9", "c1"]


def test_hops_are_ordered_by_hop_then_time_whatever_the_line_order():
    log = hops(4)
    chains = diagnose(list(reversed(log.records)))
    assert [h.index for h in chains[0].main] == [0, 1, 2, 3, 4]


def test_records_without_flow_ids_still_form_hops():
    log = lost_observe()
    for r in log.records:
        del r["flow"]
    [chain] = diagnose(log.records)
    assert [h.index for h in chain.main] == [0, 1] and chain.findings[0].code == "CH101"


# -- reading the log -----------------------------------------------------------------------------------


def test_malformed_lines_are_skipped_and_counted_with_line_numbers():
    good = [json.dumps(r) for r in lost_observe().records]
    lines = [good[0], "not json", "", json.dumps({"event": "redirect"}), json.dumps([1, 2]),
             json.dumps({"event": "redirect", "chain": "x", "hop": "1"}), good[1],
             json.dumps({"event": "redirect", "chain": "x", "hop": True})]
    read = parse_records(lines)
    assert read.malformed == [2, 4, 5, 6, 8]
    assert len(read.records) == 2
    assert diagnose(read.records)[0].findings[0].code == "CH101"


def test_unknown_events_and_fields_are_tolerated():
    log = lost_observe()
    log.records[0]["brand_new_field"] = {"nested": [1, 2]}
    log.records.append({**log.records[1], "event": "telemetry", "whatever": 1})
    read = parse_records(json.dumps(r) for r in log.records)
    assert read.unknown_events == 1 and not read.malformed
    assert diagnose(read.records)[0].findings[0].code == "CH101"


def test_wrong_field_types_do_not_crash():
    log = lost_observe()
    log.records[0].update(status="302", location=5, target=None, sent="x", ttl="600", observe="yes")
    log.records[1].update(status=None, sent=[1, "x", {"header": 3}], method=None, url=None, ts="late")
    diagnose(log.records)  # no exception; findings may be fewer


def test_kind_lookup_by_code_or_name():
    assert kind_of("ch101") is KINDS["CH101"]
    assert kind_of("credential-lost-on-redirect") is KINDS["CH101"]
    assert kind_of("nope") is None


def renamed(log: Log, chain: str) -> Log:
    for record in log.records:
        record["chain"] = chain
    log.chain = chain
    return log


def test_catalogue_texts_survive_scrubbing():
    # scrub() rewrites "token <word>" and the like: our own words must not look like secrets
    for kind in CATALOGUE:
        assert scrub(kind.title) == kind.title and scrub(kind.name) == kind.name
    for positives, _ in CASES.values():
        for chain in diagnose([r for log in positives for r in log.records]):
            for f in chain.findings:
                assert scrub(f.message) == f.message and scrub(f.hint) == f.hint, f.code


@pytest.mark.parametrize("module", ["diagnosis", "chains", "checks", "findings", "downloads", "report", "html_report", "cli", "__main__", "replay", "signed"])
def test_report_modules_import_neither_mitmproxy_nor_the_addon(module):
    import ast
    import importlib.util

    spec = importlib.util.find_spec(f"credhop.{module}")
    assert spec is not None and spec.origin is not None
    tree = ast.parse(open(spec.origin, encoding="utf-8").read())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {("." * node.level) + (node.module or "") for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert not {m for m in imported if m.startswith("mitmproxy") or m.endswith("addon")}, imported


@pytest.mark.parametrize(
    ("why", "code"),
    [("plaintext-refused", "CH403"), ("parsers-disagree", "CH404"), ("no-rule", "CH405"),
     ("credential-unusable", "CH406"), ("swap-refused", "CH408")],
)
def test_the_stable_why_code_decides_not_the_words(why, code):
    log = Log()
    log.redirect(0, A, "http://aws:***@registry.example/simple/pkg/", credential=True, action="keep",
                 why=why, reason="words that may change between releases")
    log.response(1, "http://registry.example/simple/pkg/", 401)
    found = codes(log)
    assert code in found
    assert not (found & ({"CH403", "CH404", "CH405", "CH406", "CH408"} - {code}))


@pytest.mark.parametrize(("status", "error", "code"), [(403, None, "CH102"), (500, None, "CH104"),
                                                       (None, "connection reset", "CH501")])
def test_a_failed_download_after_a_good_index_page_fails_the_chain(status, error, code):
    log = Log()
    log.redirect(0, A, LOC, target="https://registry.example", credential=True, action="inject")
    page = log.inject(1, B)
    log.response(1, B, 200, flow=page)
    wheel = "https://registry.example/pypi/files/pkg-1.0-py3-none-any.whl"
    flow = log.inject(1, wheel)
    if error:
        log._add("error", 1, "GET", wheel, flow=flow, reason=error, reuse=True)
    else:
        log._add("response", 1, "GET", wheel, flow=flow, status=status, reuse=True,
                 sent=[{"header": "authorization", "scheme": "Basic", "fingerprint": FP, "injected": True}])
    chains = diagnose(log.records)
    assert chains[0].verdict == "failed"
    assert code in {f.code for f in chains[0].findings}
    ok = Log()
    ok.redirect(0, A, LOC, target="https://registry.example", credential=True, action="inject")
    page = ok.inject(1, B)
    ok.response(1, B, 200, flow=page)
    ok._add("response", 1, "GET", wheel, flow=ok.inject(1, wheel), status=200, reuse=True)
    assert diagnose(ok.records)[0].verdict == "ok"
