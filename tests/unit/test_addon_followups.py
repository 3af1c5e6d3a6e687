"""The addon on requests: injection into follow-ups and later downloads, TTLs, swaps, leaks."""

from __future__ import annotations

import pytest
from mitmproxy.test import tflow

from credhop.urls import redact_url

from tests.unit.addon_helpers import (
    CLIENT,
    ENCODED,
    TOKEN,
    basic,
    follow,
    redirect,
    run_redirect,
    send,
)


def test_inject_moves_the_credential_to_exactly_that_origin(hop):
    f = run_redirect(hop, f"https://aws:{ENCODED}@registry.example/pypi/simple/pkg/?x=1#top")
    assert f.response.headers["location"] == "https://registry.example/pypi/simple/pkg/?x=1#top"
    expected = basic("aws", TOKEN)
    page = send(hop, "https://registry.example/pypi/simple/pkg/?x=1")
    wheel = send(hop, "https://registry.example/pypi/files/pkg-1.0-py3-none-any.whl")
    assert page.request.headers["authorization"] == expected
    assert wheel.request.headers["authorization"] == expected
    for url, client in [
        ("https://redirector.example/simple/pkg/", CLIENT),  # back to the redirector
        ("http://registry.example/pypi/simple/pkg/", CLIENT),  # https -> http
        ("https://registry.example:8443/pypi/simple/pkg/", CLIENT),  # other port
        ("https://sub.registry.example/pypi/", CLIENT),  # subdomain
        ("https://registry.example.evil/pypi/", CLIENT),  # look-alike
        ("https://registry.example/pypi/simple/pkg/", ("10.0.0.6", 1)),  # another client
    ]:
        assert "authorization" not in send(hop, url, client=client).request.headers, url
    assert f.marked and "registry.example" in f.comment
    assert page.marked and "injected" in page.comment


def test_a_second_redirect_continues_the_chain(hop):
    first = run_redirect(hop, "https://hop2.example/simple/pkg/")
    second = follow("https://hop2.example/simple/pkg/")
    hop.requestheaders(second)
    second.response = tflow.tresp(status_code=307, headers=((b"location", f"https://aws:{ENCODED}@registry.example/s/".encode()),))
    hop.responseheaders(second)
    recs = [r for r in hop.records() if r["event"] == "redirect"]
    assert [r["hop"] for r in recs] == [0, 1]
    assert recs[0]["chain"] == recs[1]["chain"] == second.metadata["credhop"]["chain"]
    assert recs[0]["flow"] == first.id  # recorded when its follow-up was redirected (a plain 3xx set aside)


def test_custom_header_template(hop):
    run_redirect(hop, f"https://aws:{ENCODED}@gitlab.example/api/")
    headers = send(hop, "https://gitlab.example/api/").request.headers
    assert headers["private-token"] == TOKEN and "authorization" not in headers


def test_client_header_wins_unless_rule_overrides(hop):
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/")
    own = send(hop, "https://registry.example/s/", headers=[("Authorization", "Bearer mine")])
    assert own.request.headers.get_all("authorization") == ["Bearer mine"]
    assert hop.records()[-1]["action"] == "skip"
    run_redirect(hop, f"https://aws:{ENCODED}@override.example/s/")
    over = send(hop, "https://override.example/s/", headers=[("Authorization", "Bearer mine")])
    assert over.request.headers.get_all("authorization")[0].startswith("Basic ")
    assert len(over.request.headers.get_all("authorization")) == 1


def test_ttl_expires_the_grant(hop):
    now = hop.clock
    run_redirect(hop, f"https://aws:{ENCODED}@short.example/s/")
    now.now += 4
    assert "authorization" in send(hop, "https://short.example/s/").request.headers
    now.now += 2
    assert "authorization" not in send(hop, "https://short.example/s/").request.headers
    hop.tctx.configure(hop.addon, credhop_ttl=1)
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/")
    now.now += 1
    assert "authorization" not in send(hop, "https://registry.example/s/").request.headers


def test_plaintext_destination_refused_unless_loopback(hop):
    location = f"http://aws:{ENCODED}@plain.example/s/"
    assert run_redirect(hop, location).response.headers["location"] == location
    assert "plaintext" in hop.records()[-1]["reason"]
    assert "authorization" not in send(hop, "http://plain.example/s/").request.headers
    run_redirect(hop, f"http://aws:{ENCODED}@127.0.0.2:8080/s/")
    assert "authorization" in send(hop, "http://127.0.0.2:8080/s/").request.headers


@pytest.mark.parametrize(("host", "action"), [("cdn.example", "log"), ("cdn.strip-leaks.example", "strip")])
def test_client_resending_its_credential_to_another_origin_is_a_leak(hop, host, action):
    own = basic("me", "my-own-secret")
    first = redirect(f"https://{host}/file", url="https://origin.example/file")
    first.request.headers["Authorization"] = own
    first.request.headers["Cookie"] = "session=abc123"
    hop.requestheaders(first)
    hop.responseheaders(first)
    follow_up = send(hop, f"https://{host}/file", headers=[("Authorization", own), ("Cookie", "session=abc123")])
    leaks = [r for r in hop.records() if r["event"] == "leak"]
    assert {(r["header"], r["kind"], r["action"]) for r in leaks} == {
        ("authorization", "other-host", action), ("cookie", "other-host", action)}
    assert leaks[0]["came_from"] == "https://origin.example" and leaks[0]["target"] == f"https://{host}"
    assert ("authorization" in follow_up.request.headers) is (action == "log")
    assert hop.addon.counters["leak_detected"] == 2


@pytest.mark.parametrize(
    ("target", "kind"),
    [("http://origin.example/x", "scheme-downgrade"), ("https://origin.example:8443/x", "other-port")],
)
def test_leak_kinds(hop, target, kind):
    first = redirect(target, url="https://origin.example/x")
    first.request.headers["X-API-Key"] = "key-123456"
    hop.responseheaders(first)
    send(hop, target, headers=[("X-API-Key", "key-123456")])
    assert [(r["header"], r["kind"]) for r in hop.records() if r["event"] == "leak"] == [("x-api-key", kind)]


def test_not_leaks_same_origin_new_credential_or_the_one_the_location_gave(hop):
    own = basic("me", "my-own-secret")
    same = redirect("/other", url="https://origin.example/x")
    same.request.headers["Authorization"] = own
    hop.responseheaders(same)
    send(hop, "https://origin.example/other", headers=[("Authorization", own)])  # same origin
    other = redirect("https://else.example/", url="https://origin.example/y")
    other.request.headers["Authorization"] = own
    hop.responseheaders(other)
    send(hop, "https://else.example/", headers=[("Authorization", basic("me", "other-secret"))])  # not re-sent
    # a client that itself follows the Location's credential (uv >= 0.7.16) is doing the right thing
    given = redirect(f"https://aws:{ENCODED}@keep.example/", url="https://origin.example/z")
    given.request.headers["Authorization"] = basic("aws", TOKEN)
    hop.responseheaders(given)
    send(hop, "https://keep.example/", headers=[("Authorization", basic("aws", TOKEN))])
    assert not [r for r in hop.records() if r["event"] == "leak"]


def test_another_site_cannot_swap_the_credential_an_origin_holds(hop):
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/", url="https://redirector.example/simple/")
    hostile = run_redirect(hop, "https://attacker:ATTACKER-TOKEN@registry.example/x", url="https://any-site.example/")
    assert "ATTACKER" in hostile.response.headers["location"]  # left alone, not adopted
    assert "already holds a live credential handed out by https://redirector.example" in hop.records()[-1]["reason"]
    # the hostile chain's follow-up gets neither credential from credhop...
    assert "authorization" not in send(hop, "https://registry.example/x").request.headers
    assert hop.records()[-1]["reason"] == "the Location this request follows carried another credential"
    # ...while the client's other requests to the registry keep the one the redirector gave
    assert send(hop, "https://registry.example/x").request.headers["authorization"] == basic("aws", TOKEN)
    # the same redirector may hand out a fresh token
    run_redirect(hop, "https://aws:NEW-TOKEN@registry.example/s/", url="https://redirector.example/simple/")
    assert send(hop, "https://registry.example/x").request.headers["authorization"] == basic("aws", "NEW-TOKEN")


def test_a_bare_redirect_is_counted_not_recorded_and_starts_no_chain(hop):
    # credhop_plain_redirects=count: one Location without `@` or a signed parameter, from a request
    # without a secret, is only counted
    hop.tctx.configure(hop.addon, credhop_plain_redirects="count")
    f = run_redirect(hop, "https://hop2.example/simple/pkg/")
    g = send(hop, "https://hop2.example/simple/pkg/")
    g.response = tflow.tresp(status_code=404)
    hop.response(g)
    assert hop.records() == [] and "credhop" not in f.metadata and "credhop" not in g.metadata
    assert hop.addon.counters["redirects"] == 1 and not f.marked
    # the next 3xx that carries a credential starts the chain at hop 0
    h = redirect(f"https://aws:{ENCODED}@registry.example/s/", url="https://hop2.example/simple/pkg/")
    hop.responseheaders(h)
    hop.response(h)
    assert [(r["event"], r["hop"]) for r in hop.records()] == [("redirect", 0)]
    assert hop.addon.counters["redirects"] == 2


@pytest.mark.parametrize("why", ["secret sent", "signed location", "two locations", "in a chain"])
def test_a_redirect_that_may_matter_is_never_taken_for_bare(hop, why):
    hop.tctx.configure(hop.addon, credhop_plain_redirects="count")
    if why == "in a chain":
        run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/")
        f = send(hop, "https://registry.example/s/")  # the follow-up, injected, gets a plain 302
        f.response = tflow.tresp(status_code=302, headers=((b"location", b"https://cdn.example/f"),))
    else:
        f = redirect({"signed location": "https://cdn.example/f?X-Amz-Signature=abc"}.get(why, "https://cdn.example/f"),
                     extra=["https://cdn.example/g"] if why == "two locations" else ())
        if why == "secret sent":
            f.request.headers["Authorization"] = basic("aws", TOKEN)
    hop.responseheaders(f)
    hop.response(f)
    assert [r for r in hop.records() if r["event"] == "redirect" and r["url"] == redact_url(f.request.url)]


def test_plain_redirects_are_recorded_when_their_chain_fails_by_default(hop):
    run_redirect(hop, "https://hop2.example/simple/pkg/")
    assert hop.records() == []  # set aside (tests/unit/test_plain_redirects.py)
    g = send(hop, "https://hop2.example/simple/pkg/")
    g.response = tflow.tresp(status_code=404)
    hop.response(g)
    assert [(r["event"], r["action"] if r["event"] == "redirect" else r["status"]) for r in hop.records()] == \
        [("redirect", "none"), ("response", 404)]
    hop.tctx.configure(hop.addon, credhop_plain_redirects="count")
    run_redirect(hop, "https://hop2.example/simple/pkg/")
    assert len(hop.records()) == 2 and hop.addon.counters["redirects"] == 2
    with pytest.raises(Exception, match="credhop_plain_redirects='skip': not one of 'failed', 'record', 'count'"):
        hop.tctx.configure(hop.addon, credhop_plain_redirects="skip")


def test_a_retry_after_401_continues_the_hop(hop):
    run_redirect(hop, "https://pip-like.example/simple/", url="https://origin.example/simple/")
    first = send(hop, "https://pip-like.example/simple/")
    first.response = tflow.tresp(status_code=401)
    hop.response(first)
    retry = send(hop, "https://pip-like.example/simple/", headers=[("Authorization", basic("aws", TOKEN))])
    retry.response = tflow.tresp(status_code=200)
    hop.response(retry)
    responses = [r for r in hop.records() if r["event"] == "response"]
    assert [(r["hop"], r["status"], r.get("retry")) for r in responses] == [(1, 401, None), (1, 200, True)]


def test_downloads_that_reuse_a_credential_are_logged_as_such(hop):
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/simple/pkg/")
    wheel = send(hop, "https://registry.example/files/pkg.whl")
    wheel.response = tflow.tresp(status_code=403)
    hop.response(wheel)
    last = hop.records()[-1]
    assert (last["event"], last["status"], last["reuse"], last["hop"]) == ("response", 403, True, 1)


def test_a_stripped_leak_is_stripped_again_on_the_next_hop(hop):
    own = [("Authorization", basic("me", "my-own-secret"))]  # curl --location-trusted re-sends it every hop
    first = redirect("https://b.strip-leaks.example/y", url="https://a.example/x")
    for k, v in own:
        first.request.headers[k] = v
    hop.requestheaders(first)
    hop.responseheaders(first)
    second = send(hop, "https://b.strip-leaks.example/y", headers=own)
    second.response = tflow.tresp(status_code=302, headers=((b"location", b"https://c.strip-leaks.example/z"),))
    hop.responseheaders(second)
    third = send(hop, "https://c.strip-leaks.example/z", headers=own)
    assert "authorization" not in second.request.headers and "authorization" not in third.request.headers
    assert [(r["hop"], r["action"]) for r in hop.records() if r["event"] == "leak"] == [(1, "strip"), (2, "strip")]


@pytest.mark.parametrize(
    ("header", "value", "came_from", "target"),
    [("Cookie", "sid=abcdef", "https://www.site.example/", "https://accounts.site.example/"),
     ("Cookie", "sid=abcdef", "https://site.example/", "https://site.example:8443/"),
     ("Authorization", "Bearer abcdefgh", "http://site.example/", "https://site.example/")],
)
def test_what_browsers_and_careful_clients_resend_is_not_a_leak(hop, header, value, came_from, target):
    f = redirect(target, url=came_from)
    f.request.headers[header] = value
    hop.responseheaders(f)
    g = send(hop, target, headers=[(header, value)])
    assert not [r for r in hop.records() if r["event"] == "leak"]
    assert g.request.headers[header] == value


@pytest.mark.parametrize(("host", "name"), [("registry.example", "Authorization"), ("gitlab.example", "PRIVATE-TOKEN")])
@pytest.mark.parametrize("http_version", ["HTTP/1.1", "HTTP/2.0"])
def test_injected_header_name_is_lower_case_on_http2(hop, host, name, http_version):
    # RFC 9113 8.2.1: with a capital, mitmproxy lowercases it itself and warns on every h2 request
    run_redirect(hop, f"https://aws:{ENCODED}@{host}/s/")
    f = follow(f"https://{host}/s/")
    f.request.http_version = http_version
    hop.requestheaders(f)
    names = [k for k, _ in f.request.headers.fields if k.lower() == name.lower().encode()]
    assert names == [name.encode() if http_version == "HTTP/1.1" else name.lower().encode()]
