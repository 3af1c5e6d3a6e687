from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

from credhop import addon as addon_module
from credhop.addon import CredHop
from credhop.hoplog import SecretFilter
from tests.secrets_check import Secret, assert_no_leak, secret_forms

TOKEN = Secret("t:k@/%n-SECRET")
ENCODED = "t%3Ak%40%2F%25n-SECRET"
FORMS = secret_forms(TOKEN)
CLIENT = ("10.0.0.5", 40000)

RULES = """\
rules:
  - name: blocker
    match: {host: blocked.example}
    action: block
  - name: stripper
    match: {host: strip.example}
    action: strip
  - name: keeper
    match: {host: keep.example}
    action: keep
  - name: gitlab
    match: {host: gitlab.example}
    action: inject
    header: {name: PRIVATE-TOKEN, value: "{password}"}
  - name: override
    match: {host: override.example}
    action: inject
    override_client_header: true
  - name: short
    match: {host: short.example}
    action: inject
    ttl: 5
  - name: registry
    match: {host: ["registry.example", "plain.example", "127.0.0.2"]}
    action: inject
  - name: careful
    match: {host: "*.strip-leaks.example"}
    action: inject
    on_leak: strip
"""


@pytest.fixture
def hop(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # mitmproxy's confdir (fingerprint key) goes here
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    log_path = tmp_path / "hops.jsonl"
    addon = CredHop()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, credhop_rules=str(rules), credhop_log=str(log_path))

        def records():
            return [json.loads(line) for line in log_path.read_text().splitlines()]

        yield SimpleNamespace(addon=addon, tctx=tctx, rules=rules, log=log_path, records=records)
        addon.done()


def redirect(location, url="https://redirector.example/simple/pkg/", status=302, client=CLIENT, extra=()):
    f = tflow.tflow(resp=True)
    f.request.url = url
    f.client_conn.peername = client
    f.response.status_code = status
    f.response.headers["location"] = location
    for value in extra:
        f.response.headers.add("location", value)
    return f


def follow(url, client=CLIENT, headers=()):
    f = tflow.tflow()
    f.request.url = url
    f.client_conn.peername = client
    for k, v in headers:
        f.request.headers[k] = v
    return f


def run_redirect(h, location, **kw):
    f = redirect(location, **kw)
    h.addon.responseheaders(f)
    h.addon.response(f)
    return f


def send(h, url, **kw):
    f = follow(url, **kw)
    h.addon.requestheaders(f)
    return f


def test_inject_moves_the_credential_to_exactly_that_origin(hop):
    f = run_redirect(hop, f"https://aws:{ENCODED}@registry.example/pypi/simple/pkg/?x=1#top")
    assert f.response.headers["location"] == "https://registry.example/pypi/simple/pkg/?x=1#top"
    expected = "Basic " + __import__("base64").b64encode(f"aws:{TOKEN}".encode()).decode()
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


def test_hop_log_links_the_follow_up_to_its_redirect(hop):
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/simple/pkg/")
    g = send(hop, "https://registry.example/simple/pkg/")
    g.response = tflow.tresp(status_code=200)
    hop.addon.response(g)
    redirect_rec, inject_rec, response_rec = hop.records()
    assert redirect_rec["event"] == "redirect" and redirect_rec["hop"] == 0
    assert redirect_rec["location"] == "https://aws:***@registry.example/simple/pkg/"
    assert redirect_rec["target"] == "https://registry.example"
    assert (redirect_rec["rule"], redirect_rec["action"], redirect_rec["user"]) == ("registry", "inject", "aws")
    assert redirect_rec["fingerprint"].startswith("hm:")
    assert inject_rec["event"] == "inject" and inject_rec["chain"] == redirect_rec["chain"] and inject_rec["hop"] == 1
    assert inject_rec["fingerprint"] == redirect_rec["fingerprint"]
    assert response_rec == {**response_rec, "event": "response", "status": 200, "hop": 1, "chain": redirect_rec["chain"]}
    assert stat.S_IMODE(os.stat(hop.log).st_mode) == 0o600


def test_a_second_redirect_continues_the_chain(hop):
    first = run_redirect(hop, "https://hop2.example/simple/pkg/")
    second = follow("https://hop2.example/simple/pkg/")
    hop.addon.requestheaders(second)
    second.response = tflow.tresp(status_code=307, headers=((b"location", f"https://aws:{ENCODED}@registry.example/s/".encode()),))
    hop.addon.responseheaders(second)
    recs = [r for r in hop.records() if r["event"] == "redirect"]
    assert [r["hop"] for r in recs] == [0, 1]
    assert recs[0]["chain"] == recs[1]["chain"] == first.metadata["credhop"]["chain"]


def test_relative_and_scheme_relative_locations(hop):
    f = run_redirect(hop, f"//aws:{ENCODED}@registry.example:8443/simple/", url="https://redirector.example/x")
    assert f.response.headers["location"] == "//registry.example:8443/simple/"
    assert "authorization" in send(hop, "https://registry.example:8443/simple/").request.headers
    assert "authorization" not in send(hop, "https://registry.example/simple/").request.headers


def test_custom_header_template(hop):
    run_redirect(hop, f"https://aws:{ENCODED}@gitlab.example/api/")
    headers = send(hop, "https://gitlab.example/api/").request.headers
    assert headers["private-token"] == TOKEN and "authorization" not in headers


def test_strip_removes_and_forgets(hop):
    f = run_redirect(hop, f"https://aws:{ENCODED}@strip.example/s/")
    assert f.response.headers["location"] == "https://strip.example/s/"
    assert "authorization" not in send(hop, "https://strip.example/s/").request.headers
    assert hop.records()[0]["action"] == "strip"


def test_keep_passes_through(hop):
    location = f"https://aws:{ENCODED}@keep.example/s/"
    f = run_redirect(hop, location)
    assert f.response.headers["location"] == location
    assert "authorization" not in send(hop, "https://keep.example/s/").request.headers


def test_no_matching_rule_keeps_and_says_so(hop):
    hop.rules.write_text("rules:\n  - name: only\n    match: {host: x.example}\n    action: strip\n")
    hop.addon.reload()
    location = f"https://aws:{ENCODED}@other.example/s/"
    assert run_redirect(hop, location).response.headers["location"] == location
    assert hop.records()[0]["reason"] == "no rule matched"


def test_block_answers_403_naming_the_rule_without_the_secret(hop):
    f = run_redirect(hop, f"https://aws:{ENCODED}@blocked.example/s/")
    assert f.response.status_code == 403
    body = f.response.text
    assert "'blocker'" in body and "https://aws:***@blocked.example/s/" in body
    assert "location" not in f.response.headers
    assert_no_leak(body, FORMS, "block body")


def test_observe_changes_nothing(hop):
    hop.tctx.configure(hop.addon, credhop_observe=True)
    location = f"https://aws:{ENCODED}@registry.example/s/"
    assert run_redirect(hop, location).response.headers["location"] == location
    assert "authorization" not in send(hop, "https://registry.example/s/").request.headers
    assert hop.records()[0]["observe"] is True and hop.records()[0]["action"] == "inject"


def test_client_header_wins_unless_rule_overrides(hop):
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/")
    own = send(hop, "https://registry.example/s/", headers=[("Authorization", "Bearer mine")])
    assert own.request.headers.get_all("authorization") == ["Bearer mine"]
    assert hop.records()[-1]["action"] == "skip"
    run_redirect(hop, f"https://aws:{ENCODED}@override.example/s/")
    over = send(hop, "https://override.example/s/", headers=[("Authorization", "Bearer mine")])
    assert over.request.headers.get_all("authorization")[0].startswith("Basic ")
    assert len(over.request.headers.get_all("authorization")) == 1


def test_ttl_expires_the_grant(hop, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(addon_module.time, "time", lambda: now[0])
    run_redirect(hop, f"https://aws:{ENCODED}@short.example/s/")
    now[0] += 4
    assert "authorization" in send(hop, "https://short.example/s/").request.headers
    now[0] += 2
    assert "authorization" not in send(hop, "https://short.example/s/").request.headers
    hop.tctx.configure(hop.addon, credhop_ttl=1)
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/")
    now[0] += 1
    assert "authorization" not in send(hop, "https://registry.example/s/").request.headers


def test_plaintext_destination_refused_unless_loopback(hop):
    location = f"http://aws:{ENCODED}@plain.example/s/"
    assert run_redirect(hop, location).response.headers["location"] == location
    assert "plaintext" in hop.records()[-1]["reason"]
    assert "authorization" not in send(hop, "http://plain.example/s/").request.headers
    run_redirect(hop, f"http://aws:{ENCODED}@127.0.0.2:8080/s/")
    assert "authorization" in send(hop, "http://127.0.0.2:8080/s/").request.headers


@pytest.mark.parametrize(
    "location",
    ["https://u:p@h.example:99999/", "ftp://aws:x@registry.example/", "https://u:%ff@registry.example/",
     "https://u:a%0d%0aX-Injected:%201@registry.example/", "http://[::1", "\x00\x01"],
)
def test_malformed_locations_never_crash_or_inject(hop, location):
    f = run_redirect(hop, location)
    assert f.response.status_code == 302
    assert "authorization" not in send(hop, "https://registry.example/").request.headers
    assert "x-injected" not in send(hop, "https://registry.example/").request.headers
    assert hop.records()[-1]["action"] in ("none", "keep")


def test_missing_or_several_locations(hop):
    f = redirect("https://registry.example/", extra=["https://other.example/"])
    hop.addon.responseheaders(f)
    g = redirect("x")
    del g.response.headers["location"]
    hop.addon.responseheaders(g)
    assert [r["reason"] for r in hop.records()] == ["2 Location headers", "no Location header"]


def test_non_redirects_are_ignored(hop):
    f = tflow.tflow(resp=True)
    f.response.headers["location"] = f"https://aws:{ENCODED}@registry.example/"
    hop.addon.responseheaders(f)
    assert not hop.log.exists() or hop.log.read_text() == ""
    assert hop.addon.stats["redirects"] == 0


def test_broken_rules_are_rejected_and_the_old_ones_kept(hop, caplog):
    hop.rules.write_text("rules:\n  - name: x\n    action: inject\n    match: {hots: a}\n")
    with pytest.raises(exceptions.OptionsError, match=r"rules.yaml:4:13: rules\[0\].match.hots"):
        hop.tctx.configure(hop.addon, credhop_rules=str(hop.rules) + "")  # same path, re-set
        hop.addon.configure({"credhop_rules"})
    with caplog.at_level(logging.ERROR, logger="credhop"):
        hop.addon.reload()
    assert "keeping the previous 8 rule(s)" in caplog.text and "rules.yaml:4:13" in caplog.text
    assert len(hop.addon.rules.rules) == 8
    assert hop.addon.stats["rules_reload_failed"] == 1


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("credhop_ttl", 0, "must be 1..604800"), ("credhop_ttl", 10**9, "must be 1..604800"), ("credhop_max_credentials", 0, "at least 1"),
     ("credhop_log", "/proc/nonexistent/x.jsonl", "cannot open"), ("credhop_rules", "/nonexistent.yaml", "cannot read")],
)
def test_bad_option_values_raise_options_error(hop, option, value, message):
    with pytest.raises(exceptions.OptionsError, match=message):
        hop.tctx.configure(hop.addon, **{option: value})


def test_fingerprint_key_file_is_created_private_and_short_keys_refused(hop, tmp_path):
    key = tmp_path / ".mitmproxy" / "credhop-fingerprint.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    short = tmp_path / "short.key"
    short.write_text("abc")
    with pytest.raises(exceptions.OptionsError, match="fewer than 16"):
        hop.tctx.configure(hop.addon, credhop_fingerprint_key=str(short))


def test_stats_count_every_decision(hop):
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/")
    run_redirect(hop, f"https://aws:{ENCODED}@strip.example/s/")
    run_redirect(hop, "https://no-credential.example/")
    send(hop, "https://registry.example/s/")
    line = hop.addon.stats_line()
    for part in ("action_inject=1", "action_strip=1", "injected=1", "location_userinfo=2", "redirects=3", "credentials held=1"):
        assert part in line


def test_no_secret_in_any_output(hop, caplog):
    with caplog.at_level(logging.DEBUG, logger="credhop"):
        flows = [run_redirect(hop, f"https://aws:{ENCODED}@{h}/s/") for h in
                 ("registry.example", "strip.example", "blocked.example", "gitlab.example", "plain.example")]
        flows.append(send(hop, "https://registry.example/s/"))
        hop.addon.done()
    text = hop.log.read_text() + caplog.text + "".join(f.comment for f in flows) + hop.addon.stats_line()
    assert "credhop" in caplog.text and hop.log.read_text()
    assert_no_leak(text, FORMS, "hop log, event log, comments, stats")


def test_secret_filter_scrubs_foreign_log_lines():
    record = logging.LogRecord("mitmproxy.proxy", logging.WARNING, __file__, 1,
                               "Invalid request: GET http://aws:%s@registry.example/ HTTP/1.1 (%s)",
                               (ENCODED, "Authorization: Basic YXdzOnNlY3JldA=="), None)
    SecretFilter().filter(record)
    message = record.getMessage()
    assert ENCODED not in message and "YXdzOnNlY3JldA" not in message
    assert "http://aws:***@registry.example/" in message


def basic(user, password):
    return "Basic " + __import__("base64").b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(("host", "action"), [("cdn.example", "log"), ("cdn.strip-leaks.example", "strip")])
def test_client_resending_its_credential_to_another_origin_is_a_leak(hop, host, action):
    own = basic("me", "my-own-secret")
    first = redirect(f"https://{host}/file", url="https://origin.example/file")
    first.request.headers["Authorization"] = own
    first.request.headers["Cookie"] = "session=abc123"
    hop.addon.requestheaders(first)
    hop.addon.responseheaders(first)
    follow_up = send(hop, f"https://{host}/file", headers=[("Authorization", own), ("Cookie", "session=abc123")])
    leaks = [r for r in hop.records() if r["event"] == "leak"]
    assert {(r["header"], r["kind"], r["action"]) for r in leaks} == {
        ("authorization", "other-host", action), ("cookie", "other-host", action)}
    assert leaks[0]["came_from"] == "https://origin.example" and leaks[0]["target"] == f"https://{host}"
    assert ("authorization" in follow_up.request.headers) is (action == "log")
    assert hop.addon.stats["leak_detected"] == 2


@pytest.mark.parametrize(
    ("target", "kind"),
    [("http://origin.example/x", "scheme-downgrade"), ("https://origin.example:8443/x", "other-port")],
)
def test_leak_kinds(hop, target, kind):
    first = redirect(target, url="https://origin.example/x")
    first.request.headers["X-API-Key"] = "key-123456"
    hop.addon.responseheaders(first)
    send(hop, target, headers=[("X-API-Key", "key-123456")])
    assert [(r["header"], r["kind"]) for r in hop.records() if r["event"] == "leak"] == [("x-api-key", kind)]


def test_not_leaks_same_origin_new_credential_or_the_one_the_location_gave(hop):
    own = basic("me", "my-own-secret")
    same = redirect("/other", url="https://origin.example/x")
    same.request.headers["Authorization"] = own
    hop.addon.responseheaders(same)
    send(hop, "https://origin.example/other", headers=[("Authorization", own)])  # same origin
    other = redirect("https://else.example/", url="https://origin.example/y")
    other.request.headers["Authorization"] = own
    hop.addon.responseheaders(other)
    send(hop, "https://else.example/", headers=[("Authorization", basic("me", "other-secret"))])  # not re-sent
    # a client that itself follows the Location's credential (uv >= 0.7.16) is doing the right thing
    given = redirect(f"https://aws:{ENCODED}@keep.example/", url="https://origin.example/z")
    given.request.headers["Authorization"] = basic("aws", TOKEN)
    hop.addon.responseheaders(given)
    send(hop, "https://keep.example/", headers=[("Authorization", basic("aws", TOKEN))])
    assert not [r for r in hop.records() if r["event"] == "leak"]


def test_hop_log_says_what_each_request_carried(hop):
    f = redirect("https://next.example/", url="https://origin.example/")
    f.request.headers["Authorization"] = "Bearer abcdefgh"
    hop.addon.responseheaders(f)
    sent = hop.records()[0]["sent"]
    assert sent == [{"header": "authorization", "scheme": "Bearer", "fingerprint": sent[0]["fingerprint"], "injected": False}]
    assert sent[0]["fingerprint"].startswith("hm:")


def test_secret_in_the_redirect_body_is_scrubbed_too(hop):
    f = redirect(f"https://aws:{ENCODED}@registry.example/s/")
    f.response.set_text(f'Redirecting to <a href="https://aws:{ENCODED}@registry.example/s/">here</a>')
    hop.addon.responseheaders(f)
    hop.addon.response(f)
    assert f.response.text == 'Redirecting to <a href="https://registry.example/s/">here</a>'


def test_flows_stay_serialisable_for_mitmdump_w(hop):
    import io

    from mitmproxy import io as mio

    f = run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/")
    g = send(hop, "https://registry.example/s/")
    buf = io.BytesIO()
    mio.FlowWriter(buf).add(f)
    mio.FlowWriter(buf).add(g)
    assert g.metadata["credhop"] == {"chain": f.metadata["credhop"]["chain"], "hop": 1}


def test_follow_up_errors_are_logged(hop):
    from mitmproxy import flow as mflow

    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/")
    g = send(hop, "https://registry.example/s/")
    g.error = mflow.Error("connection refused")
    hop.addon.error(g)
    assert hop.records()[-1] == {**hop.records()[-1], "event": "error", "reason": "connection refused", "hop": 1}


def test_max_credentials_bounds_the_store(hop):
    hop.tctx.configure(hop.addon, credhop_max_credentials=2)
    for i in range(3):
        run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/", client=(f"10.0.1.{i}", 1))
    assert len(hop.addon.store) == 2
    assert "authorization" not in send(hop, "https://registry.example/s/", client=("10.0.1.0", 1)).request.headers
    assert "authorization" in send(hop, "https://registry.example/s/", client=("10.0.1.2", 1)).request.headers


def test_bad_secret_header_names_are_refused(hop):
    with pytest.raises(exceptions.OptionsError, match="invalid header name"):
        hop.tctx.configure(hop.addon, credhop_secret_headers="X-Ok, bad header")


def test_event_log_lines_for_every_event(hop, caplog):
    from mitmproxy import flow as mflow

    with caplog.at_level(logging.DEBUG, logger="credhop"):
        first = redirect(f"https://aws:{ENCODED}@registry.example/s/", url="https://origin.example/")
        first.request.headers["Cookie"] = "session=abcdef"
        hop.addon.responseheaders(first)
        g = send(hop, "https://registry.example/s/", headers=[("Cookie", "session=abcdef")])
        g.response = tflow.tresp(status_code=404)
        hop.addon.response(g)
        run_redirect(hop, f"https://aws:{ENCODED}@registry.example/t/")
        e = send(hop, "https://registry.example/t/")
        e.error = mflow.Error("connection refused")
        hop.addon.error(e)
    lines = [r.getMessage() for r in caplog.records if r.name == "credhop"]
    assert any(" redirect: 302 https://origin.example/ -> https://aws:***@registry.example/s/" in x for x in lines)
    assert any(" leak: client re-sent cookie from https://origin.example to https://registry.example (other-host)" in x for x in lines)
    assert any(" inject: Authorization added to GET https://registry.example/s/" in x for x in lines)
    assert any(" response: GET https://registry.example/s/ -> 404" in x for x in lines)
    assert any(" error: GET https://registry.example/t/ -> no response (connection refused)" in x for x in lines)


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


def test_bare_token_in_authorization_is_not_logged_as_a_scheme(hop):
    f = redirect("https://next.example/", url="https://origin.example/")
    f.request.headers["Authorization"] = "ghp_MyPersonalAccessToken123"
    hop.addon.responseheaders(f)
    assert hop.records()[0]["sent"][0]["scheme"] is None
    assert "ghp_" not in hop.log.read_text()


def test_block_replaces_a_body_even_when_streamed(hop):
    f = redirect(f"https://aws:{ENCODED}@blocked.example/s/")
    f.response.stream = True  # as stream_large_bodies would
    hop.addon.responseheaders(f)
    chunks = [c for data in (b"<a href='https://aws:", ENCODED.encode(), b"@blocked'>", b"") for c in f.response.stream(data)]
    assert f.response.status_code == 403 and b"".join(chunks).startswith(b"credhop: rule 'blocker' blocked")
    assert f.response.headers["content-length"] == str(len(b"".join(chunks)))


def test_streamed_redirect_body_is_scrubbed_across_chunk_boundaries(hop):
    f = redirect(f"https://aws:{ENCODED}@registry.example/s/")
    hop.addon.responseheaders(f)
    body = f"see https://aws:{ENCODED}@registry.example/s/ or \\\\aws:{ENCODED}@registry.example/ (time@work)".encode()
    out = b"".join(c for i in range(0, len(body), 7) for c in f.response.stream(body[i:i + 7]))
    out += b"".join(f.response.stream(b""))
    assert out == b"see https://registry.example/s/ or \\\\registry.example/ (time@work)"
    assert f.response.headers["transfer-encoding"] == "chunked" and "content-length" not in f.response.headers


def test_scrub_masks_header_values_in_foreign_log_lines():
    from credhop.hoplog import scrub

    for line in ["Authorization: Bearer t:k@/%n-SECRET", "headers=[(b'authorization', b'ghp_MyToken12345')]",
                 "PRIVATE-TOKEN: glpat-abcdefghijkl", "Proxy-Authorization: Negotiate YIIabcdefgh=="]:
        cleaned = scrub(line)
        assert not any(s in cleaned for s in ("SECRET", "ghp_", "glpat", "YIIabc")), cleaned


def test_a_retry_after_401_continues_the_hop(hop):
    run_redirect(hop, "https://pip-like.example/simple/", url="https://origin.example/simple/")
    first = send(hop, "https://pip-like.example/simple/")
    first.response = tflow.tresp(status_code=401)
    hop.addon.response(first)
    retry = send(hop, "https://pip-like.example/simple/", headers=[("Authorization", basic("aws", TOKEN))])
    retry.response = tflow.tresp(status_code=200)
    hop.addon.response(retry)
    responses = [r for r in hop.records() if r["event"] == "response"]
    assert [(r["hop"], r["status"], r.get("retry")) for r in responses] == [(1, 401, None), (1, 200, True)]


def test_downloads_that_reuse_a_credential_are_logged_as_such(hop):
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/simple/pkg/")
    wheel = send(hop, "https://registry.example/files/pkg.whl")
    wheel.response = tflow.tresp(status_code=403)
    hop.addon.response(wheel)
    last = hop.records()[-1]
    assert (last["event"], last["status"], last["reuse"], last["hop"]) == ("response", 403, True, 1)


def test_report_command_and_one_warning_when_a_chain_ends_badly(hop, caplog):
    hop.tctx.configure(hop.addon, credhop_observe=True)
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/simple/pkg/")
    lost = send(hop, "https://registry.example/simple/pkg/")
    lost.response = tflow.tresp(status_code=404)
    with caplog.at_level(logging.WARNING, logger="credhop"):
        hop.addon.response(lost)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "CH101" in warnings[0]
    report = hop.addon.report()
    assert report.splitlines()[0].startswith("✗ FAILED chain") and "credential-lost-on-redirect" in report.splitlines()[0]
    assert_no_leak(report + "".join(warnings), FORMS, "credhop.report and the warning")
    assert hop.addon.stats["chains_failed"] == 1


def test_a_stripped_leak_is_stripped_again_on_the_next_hop(hop):
    own = [("Authorization", basic("me", "my-own-secret"))]  # curl --location-trusted re-sends it every hop
    first = redirect("https://b.strip-leaks.example/y", url="https://a.example/x")
    for k, v in own:
        first.request.headers[k] = v
    hop.addon.requestheaders(first)
    hop.addon.responseheaders(first)
    second = send(hop, "https://b.strip-leaks.example/y", headers=own)
    second.response = tflow.tresp(status_code=302, headers=((b"location", b"https://c.strip-leaks.example/z"),))
    hop.addon.responseheaders(second)
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
    hop.addon.responseheaders(f)
    g = send(hop, target, headers=[(header, value)])
    assert not [r for r in hop.records() if r["event"] == "leak"]
    assert g.request.headers[header] == value


@pytest.mark.parametrize(
    "location",
    ["https://aws:abc/def+ghi==@registry.example/s/", "https://aws:ab?c#d@registry.example:99999/",
     "https://aws:abc\r\n def@registry.example/"],
)
def test_unparseable_locations_never_log_their_secret(hop, location):
    run_redirect(hop, location)
    text = hop.log.read_text()
    assert "def+ghi" not in text and "ab?c#d" not in text and "abc\\r\\n def" not in text
    assert "***@" in hop.records()[-1]["location"]


def test_html_escaped_userinfo_in_a_redirect_body_is_scrubbed(hop):
    import html as html_lib

    location = "https://aws:tok&en'SECRET@registry.example/s/"
    f = redirect(location)
    f.response.set_text(f'<a href="{html_lib.escape(location)}">moved</a> '
                        f'<a href="{html_lib.escape(location).replace("&#x27;", "&#39;")}">moved</a>')
    hop.addon.responseheaders(f)
    hop.addon.response(f)
    assert "SECRET" not in f.response.text and f.response.text.count('href="https://registry.example/s/"') == 2
