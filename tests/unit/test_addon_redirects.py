"""The addon on 3xx responses: what each rule action does to the Location and the body."""

from __future__ import annotations

import pytest
from mitmproxy.test import tflow

from tests.secrets_check import assert_no_leak
from tests.unit.addon_helpers import (
    ENCODED,
    FORMS,
    redirect,
    run_redirect,
    send,
)


def test_relative_and_scheme_relative_locations(hop):
    f = run_redirect(hop, f"//aws:{ENCODED}@registry.example:8443/simple/", url="https://redirector.example/x")
    assert f.response.headers["location"] == "//registry.example:8443/simple/"
    assert "authorization" in send(hop, "https://registry.example:8443/simple/").request.headers
    assert "authorization" not in send(hop, "https://registry.example/simple/").request.headers


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
    hop.responseheaders(f)
    g = redirect("x")
    del g.response.headers["location"]
    hop.responseheaders(g)
    assert [r["reason"] for r in hop.records()] == ["2 Location headers", "no Location header"]


def test_non_redirects_are_ignored(hop):
    f = tflow.tflow(resp=True)
    f.response.headers["location"] = f"https://aws:{ENCODED}@registry.example/"
    hop.responseheaders(f)
    assert not hop.log.exists() or hop.log.read_text() == ""
    assert hop.addon.counters["redirects"] == 0


def test_secret_in_the_redirect_body_is_scrubbed_too(hop):
    f = redirect(f"https://aws:{ENCODED}@registry.example/s/")
    f.response.set_text(f'Redirecting to <a href="https://aws:{ENCODED}@registry.example/s/">here</a>')
    hop.responseheaders(f)
    assert not f.response.stream  # mitmproxy buffers it: scrubbed whole, its framing kept
    hop.response(f)
    assert f.response.text == 'Redirecting to <a href="https://registry.example/s/">here</a>'
    assert f.response.headers["content-length"] == str(len(f.response.raw_content))
    assert "transfer-encoding" not in f.response.headers


def test_a_body_of_unknown_length_is_streamed_through_the_scrubber_from_the_start(hop):
    # mitmproxy may switch such a body to streaming halfway (stream_large_bodies): it must already
    # go through the scrubber then, not pass raw
    f = redirect(f"https://aws:{ENCODED}@registry.example/s/")
    f.response.headers.pop("content-length", None)
    f.response.headers["transfer-encoding"] = "chunked"
    hop.responseheaders(f)
    assert callable(f.response.stream)
    out = b"".join(c for data in (f"see https://aws:{ENCODED}@registry.example/s/".encode(), b"")
                   for c in f.response.stream(data))
    assert out == b"see https://registry.example/s/"


def test_block_replaces_a_body_even_when_streamed(hop):
    f = redirect(f"https://aws:{ENCODED}@blocked.example/s/")
    f.response.stream = True  # as stream_large_bodies would
    hop.responseheaders(f)
    chunks = [c for data in (b"<a href='https://aws:", ENCODED.encode(), b"@blocked'>", b"") for c in f.response.stream(data)]
    assert f.response.status_code == 403 and b"".join(chunks).startswith(b"credhop: rule 'blocker' blocked")
    assert f.response.headers["content-length"] == str(len(b"".join(chunks)))


def test_streamed_redirect_body_is_scrubbed_across_chunk_boundaries(hop):
    f = redirect(f"https://aws:{ENCODED}@registry.example/s/")
    f.response.stream = True  # as stream_large_bodies would
    hop.responseheaders(f)
    body = f"see https://aws:{ENCODED}@registry.example/s/ or \\\\aws:{ENCODED}@registry.example/ (time@work)".encode()
    out = b"".join(c for i in range(0, len(body), 7) for c in f.response.stream(body[i:i + 7]))
    out += b"".join(f.response.stream(b""))
    assert out == b"see https://registry.example/s/ or \\\\registry.example/ (time@work)"
    assert f.response.headers["transfer-encoding"] == "chunked" and "content-length" not in f.response.headers


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
    hop.responseheaders(f)
    hop.response(f)
    assert "SECRET" not in f.response.text and f.response.text.count('href="https://registry.example/s/"') == 2
