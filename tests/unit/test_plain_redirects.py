"""Plain redirects (a 3xx that cannot start a credential hop) under credhop_plain_redirects:
'failed' (the default) sets them aside and records one only when its chain needs explaining,
with the same records 'record' writes; the cheap Location reading agrees with the WHATWG parser."""

from __future__ import annotations

import ada_url
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mitmproxy.test import tflow

from credhop.pending import PlainRedirects
from credhop.records import Action, RedirectRecord
from credhop.sinks import Counters, Sinks
from credhop.urls import follow_key, plain_follow_key

from tests.unit.addon_helpers import CLIENT, ENCODED, TOKEN, basic, redirect, run_redirect, send

VOLATILE = ("chain", "flow", "ts")  # random or per-flow: compared by shape, not value


def answer(h, f, status, location=None):
    headers = ((b"location", location.encode()),) if location else ()
    f.response = tflow.tresp(status_code=status, headers=headers)
    if location:
        h.responseheaders(f)
    h.response(f)
    return f


def walk(h, ending, client=CLIENT):
    """A 302 without a credential, then its follow-up ending as `ending` says."""
    first = run_redirect(h, "https://mirror.example/simple/pkg/", url="https://redirector.example/simple/pkg/",
                         client=client)
    h.clock.now += 2
    second = send(h, "https://mirror.example/simple/pkg/", client=client)
    if ending == "error":
        second.error = tflow.terr()
        h.error(second)
    elif ending == "redirected":
        answer(h, second, 302, "https://mirror.example/simple/pkg/?page=2")
        third = send(h, "https://mirror.example/simple/pkg/?page=2", client=client)
        answer(h, third, 404)
    else:
        answer(h, second, ending)
    return first


def shapes(records):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


@pytest.mark.parametrize("ending", [404, 401, 500, "error", "redirected"])
def test_a_chain_that_needs_explaining_is_recorded_as_record_mode_records_it(hop, ending):
    walk(hop, ending)
    failed = hop.records()
    hop.tctx.configure(hop.addon, credhop_plain_redirects="record")
    hop.clock.now += 600  # the first walk's expectations (a retry after a 401) are gone
    walk(hop, ending)
    recorded = hop.records()[len(failed):]
    assert failed and shapes(failed) == shapes(recorded)
    # the redirect keeps the time it came, not the time its chain went wrong
    assert failed[0]["event"] == "redirect" and failed[0]["ts"] == pytest.approx(failed[1]["ts"] - 2)
    assert len({r["chain"] for r in failed}) == 1
    # counted once, when it came: being recorded later does not count it again
    assert hop.addon.counters["redirects"] == len([r for r in failed + recorded if r["event"] == "redirect"])


def test_a_chain_that_ended_well_leaves_nothing_behind(hop):
    first = walk(hop, 200)
    assert hop.records() == [] and "credhop" not in first.metadata
    assert hop.addon.counters["redirects"] == 1
    assert len(hop.addon.hops.plain) == 0 and not hop.addon.hops.flows and not hop.addon.hops.bare_seen


def test_a_404_after_a_plain_redirect_is_a_failed_chain_live(hop):
    walk(hop, 404)
    assert hop.addon.counters["chains_failed"] == 1


def test_the_follow_up_of_a_client_holding_a_credential_gets_the_full_path(hop):
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/simple/")
    send(hop, "https://registry.example/simple/").response = tflow.tresp()
    before = len(hop.records())
    run_redirect(hop, "https://registry.example/files/pkg.whl", url="https://registry.example/simple/pkg/")
    wheel = send(hop, "https://registry.example/files/pkg.whl")
    assert wheel.request.headers["authorization"] == basic("aws", TOKEN)
    # recorded at once, as the plain chain's follow-up (hop 1), not as a download of the first chain
    new = hop.records()[before:]
    assert [(r["event"], r["hop"]) for r in new] == [("redirect", 0), ("inject", 1)]
    assert new[0]["chain"] == new[1]["chain"] == wheel.metadata["credhop"]["chain"]


@pytest.mark.parametrize("location", [
    "pkg/",  # relative path: resolved by a URL parser
    "/simple/../pkg/",  # dot segments
    "https://mirror.example/simple/caf%C3%A9/",  # escapes some clients rewrite
    "https://[::1]:8443/simple/",  # bracketed host
])
def test_a_location_the_cheap_reading_cannot_tell_is_recorded_at_once(hop, location):
    f = run_redirect(hop, location)
    assert [(r["event"], r["action"]) for r in hop.records()] == [("redirect", "none")]
    assert f.metadata["credhop"]["hop"] == 0 and len(hop.addon.hops.plain) == 0


def test_another_request_of_the_client_is_not_taken_for_the_follow_up(hop):
    run_redirect(hop, "https://mirror.example/simple/pkg/")
    other = send(hop, "https://mirror.example/simple/other/")
    answer(hop, other, 404)
    assert hop.records() == [] and len(hop.addon.hops.plain) == 1
    hop.clock.now += 61  # set aside for a minute at most
    late = send(hop, "https://mirror.example/simple/pkg/")
    answer(hop, late, 404)
    assert hop.records() == [] and len(hop.addon.hops.plain) == 0


def test_count_mode_never_records_and_record_mode_always_does(hop):
    hop.tctx.configure(hop.addon, credhop_plain_redirects="count")
    walk(hop, 404)
    assert hop.records() == [] and len(hop.addon.hops.plain) == 0
    hop.tctx.configure(hop.addon, credhop_plain_redirects="record")
    walk(hop, 200)
    assert [(r["event"], r["hop"]) for r in hop.records()] == [("redirect", 0), ("response", 1)]


def test_a_redirect_made_by_another_addon_is_set_aside_once(hop):
    # server replay or map_local answers in `request`: `responseheaders` never runs
    f = redirect("https://mirror.example/simple/pkg/")
    hop.response(f)
    assert hop.addon.counters["redirects"] == 1 and len(hop.addon.hops.plain) == 1
    answer(hop, send(hop, "https://mirror.example/simple/pkg/"), 404)
    assert [(r["event"], r["hop"]) for r in hop.records()] == [("redirect", 0), ("response", 1)]
    assert hop.addon.counters["redirects"] == 1


def test_plain_redirects_are_bounded_and_expire():
    now = [0.0]
    aside = PlainRedirects(max_entries=2, ttl=10, clock=lambda: now[0])
    for i in range(3):
        aside.put("c", f"k{i}", i)
    assert len(aside) == 2 and aside.take("c", "k0") is None and aside.take("c", "k2") == (2, 0.0)
    assert "c" in aside and "d" not in aside
    now[0] = 10
    assert aside.take("c", "k1") is None and "c" not in aside and len(aside) == 0


def test_uncounted_records_pass_the_counting_sinks_by():
    seen = []

    class Collect:
        def emit(self, record):
            seen.append(record)

    counters = Counters()
    sinks = Sinks(counters, Collect())
    record = RedirectRecord(ts=1.0, client="c", chain="x", hop=0, flow="f", method="GET", url="https://a/",
                            retry=False, reuse=False, instance=None, status=302, action=Action.NONE,
                            location="https://b/", target="https://b", relative=False)
    sinks.emit_uncounted(record)  # first, while the counters are empty (an empty Counter is falsy)
    assert seen == [record] and counters["redirects"] == 0
    sinks.emit(record)
    sinks.emit_uncounted(record)
    assert seen == [record] * 3 and counters["redirects"] == 1


ISSUER = ("http", "issuer.example", 8080)


@pytest.mark.parametrize(("location", "key"), [
    ("https://files.example/simple/1/", "https://files.example:443/simple/1/"),
    ("HTTPS://Files.Example:443/a?b#c", "https://files.example:443/a?b"),
    ("//cdn.example:8081/x", "http://cdn.example:8081/x"),
    ("/simple/x/", "http://issuer.example:8080/simple/x/"),
    ("http://h", "http://h:80/"),
    ("http://h?x", "http://h:80/?x"),
    ("", None), ("?x", None), ("//", None), ("simple/x", None), ("/a/./b", None),
    ("https://h:0/", None), ("https://h:65536/", None), ("https://h./", None), ("ftp://h/", None),
    ("https://h/a b", None), ("/a?", None), ("/?'", None), ("/a|b", None), ("/a{b}", None),
    ("https://xn--a/", None), ("https://x.XN--zz/", None),
    ("https://h/a\\b", None), ("https://h/\u00e9", None), ("https://h/a\tb", None),
])
def test_plain_follow_key(location, key):
    assert plain_follow_key(location, *ISSUER) == key


_chars = st.sampled_from(list("aZ09-._~/?#:;=&+!$'()*,[]@%\\ \t\u00e9|^{}\"<>`") +
                         ["..", "./", "//", "HTTP://", "https://", "xn--", "0x"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_chars, max_size=14).map("".join))
@example("https://a/b/..")
@example("//a:80/?q")
@example("HTTP://A:0080/")
@example("/?'")
@example("/a?")
def test_the_cheap_reading_agrees_with_whatwg_wherever_it_answers(location):
    key = plain_follow_key(location, *ISSUER)
    if key is None:
        return
    base = "http://issuer.example:8080/simple/pkg/"
    url = ada_url.URL(location, base)
    scheme = url.protocol[:-1]
    port = int(url.port) if url.port else {"http": 80, "https": 443}[scheme]
    target = url.href.partition("#")[0][len(f"{scheme}://{url.host}"):]  # `search` drops an empty "?"
    assert key == follow_key(scheme, url.hostname, port, target), location


def test_an_older_redirect_to_the_same_url_keeps_its_leak_check(hop):
    # the client sent its own secret to a.example and was sent on to cdn (an on_leak: strip rule);
    # a plain 302 to the same URL, set aside, must not take that follow-up's place
    own = ("Authorization", "Bearer client-own-SECRET")
    first = redirect("https://cdn.strip-leaks.example/file", url="https://a.example/x")
    first.request.headers[own[0]] = own[1]
    hop.responseheaders(first)
    hop.response(first)
    run_redirect(hop, "https://cdn.strip-leaks.example/file", url="https://b.example/y")
    follow_up = send(hop, "https://cdn.strip-leaks.example/file", headers=[own])
    assert "authorization" not in follow_up.request.headers  # stripped, as with `record`
    assert [r["event"] for r in hop.records()].count("leak") == 1


def test_a_set_aside_redirect_replayed_meanwhile_still_records_what_came(hop):
    first = run_redirect(hop, "https://mirror.example/simple/pkg/")
    first.response = None  # mitmweb's replay of the 3xx, still running
    follow_up = send(hop, "https://mirror.example/simple/pkg/")
    answer(hop, follow_up, 404)
    assert follow_up.response.status_code == 404
    assert [(r["event"], r.get("status")) for r in hop.records()] == [("redirect", 302), ("response", 404)]


def test_a_follow_up_redirect_that_cannot_be_judged_does_not_go_on(hop, monkeypatch):
    run_redirect(hop, "https://mirror.example/simple/pkg/")
    follow_up = send(hop, "https://mirror.example/simple/pkg/")

    def broken(*_):
        raise RuntimeError("boom")

    monkeypatch.setattr(hop.addon.hops, "record_plain", broken)
    location = f"https://aws:{ENCODED}@x.example/".encode()
    follow_up.response = tflow.tresp(status_code=302, headers=((b"location", location),))
    hop.response(follow_up)  # a 3xx another addon made: `responseheaders` never ran
    assert follow_up.response.status_code == 502 and ENCODED not in follow_up.response.text
    assert hop.addon.counters["internal_errors"] == 1
