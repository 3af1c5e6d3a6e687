"""Issue 13 (security round 2) at the addon's hooks: each class with the variants an attacker tries
next. The same classes run through real mitmdump and real clients in tests/e2e/test_security_round2.py."""

from __future__ import annotations

import gzip
import logging
import re
import zlib

import brotli
import pytest
from mitmproxy import http
from mitmproxy.test import tflow

from credhop.credentials import Credential, secret_like_user
from credhop.scrub import Redactor
from credhop.urls import normalize_url, redact_url
from tests.secrets_check import assert_no_leak
from tests.unit.addon_helpers import (
    CLIENT,
    ENCODED,
    FORMS,
    TOKEN,
    basic,
    redirect,
    run_redirect,
    send,
)

OWN = basic("me", "my-own-secret")


# -- 1. a follow-up re-quoted by the client is still linked; a leak is a leak whatever the path -----

@pytest.mark.parametrize(("location", "requested"), [
    ("/rt/leak/%7Euser/pkg", "/rt/leak/~user/pkg"),  # requests
    ("/rt/leak/%7euser/pkg", "/rt/leak/%7Euser/pkg"),  # urllib3
    ("/rt/leak/~user/pkg", "/rt/leak/%7euser/pkg"),
    ("/rt/./x/../leak/pkg#frag", "/rt/leak/pkg"),  # dot segments, fragment
    ("/rt/leak/pkg?q=%41", "/rt/leak/pkg?q=A"),
    ("/rt/leak/caf%C3%A9", "/rt/leak/caf%c3%a9"),  # escape case of non-ASCII
])
@pytest.mark.parametrize("target", ["http://cdn.strip-leaks.example", "http://cdn.strip-leaks.example:80"])
def test_a_re_quoted_follow_up_is_linked_and_its_leak_stripped(hop, location, requested, target):
    first = redirect(target + location, url="https://origin.example/s/1")
    first.request.headers["Authorization"] = OWN
    hop.requestheaders(first)
    hop.responseheaders(first)
    g = send(hop, "http://cdn.strip-leaks.example" + requested, headers=[("Authorization", OWN)])
    assert "authorization" not in g.request.headers
    leaks = [r for r in hop.records() if r["event"] == "leak"]
    assert [(r["hop"], r["kind"], r["action"]) for r in leaks] == [(1, "scheme-downgrade", "strip")]
    assert g.metadata["credhop"]["chain"] == first.metadata["credhop"]["chain"]


def test_a_leak_to_the_new_origin_is_caught_on_any_path(hop):
    first = redirect("https://cdn.strip-leaks.example/one", url="https://origin.example/")
    first.request.headers["Authorization"] = OWN
    hop.requestheaders(first)
    hop.responseheaders(first)
    other = send(hop, "https://cdn.strip-leaks.example/somewhere/else", headers=[("Authorization", OWN)])
    again = send(hop, "https://cdn.strip-leaks.example/and/again", headers=[("Authorization", OWN)])
    assert "authorization" not in other.request.headers and "authorization" not in again.request.headers
    assert len([r for r in hop.records() if r["event"] == "leak"]) == 2
    elsewhere = send(hop, "https://unrelated.example/", headers=[("Authorization", OWN)])
    assert elsewhere.request.headers["authorization"] == OWN  # never sent there by a redirect


def test_urls_are_normalised_the_way_clients_rewrite_them():
    same = ["https://Registry.Example:443/a/./b/../c/%7Ex?q=%4a#f", "https://registry.example/a/c/~x?q=J",
            "https://registry.example/a/c/%7ex?q=%4A"]
    assert len({normalize_url(u) for u in same}) == 1
    assert normalize_url("https://r.example/a%2Fb") != normalize_url("https://r.example/a/b")
    assert normalize_url("https://r.example/a%3Fb") != normalize_url("https://r.example/a?b")
    assert normalize_url("https://bücher.example/") == normalize_url("https://xn--bcher-kva.example/")


# -- 2 and 6. no form of a known secret in any line that passes the filter ----------------------------

@pytest.mark.parametrize("line", [
    "Bad HTTP request line: b'CONNECT u:{tok}@127.0.0.2:8080 HTTP/1.0'",
    "Bad HTTP request line: b'CONNECT {tok}@127.0.0.2:8080 HTTP/1.1'",
    "GET https://127.0.0.2/rt/echo/?token={tok}",
    "GET https://127.0.0.2/rt/echo/?q={tok}",
    "GET https://127.0.0.2/r//u:{tok}@x",
    "GET https://127.0.0.2/r/#access_token={tok}",
    "GET https://127.0.0.2/r/{tok}/x",
    "headers: [(b'x-custom', b'{tok}')]",
])
@pytest.mark.parametrize("spell", ["raw", "encoded", "lower"])
def test_every_spelling_of_a_secret_credhop_has_seen_is_masked(hop, caplog, line, spell):
    run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/?token={ENCODED}#access_token={ENCODED}")
    lower = re.sub(r"%[0-9A-F]{2}", lambda m: m[0].lower(), ENCODED)
    tok = {"raw": str(TOKEN), "encoded": ENCODED, "lower": lower}[spell]
    record = logging.LogRecord("mitmproxy.proxy", logging.INFO, __file__, 1, line.format(tok=tok), None, None)
    hop.addon.filter.filter(record)
    assert_no_leak(record.getMessage() + hop.log.read_text(), FORMS | {lower}, "log line and hop log")


def test_signed_url_parameters_are_redacted_in_records(hop):
    f = redirect("https://bucket.s3.example/wheel.whl?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=abc123sig"
                 "&X-Amz-Security-Token=FQoGZX&sig=azuresig&se=2030&Signature=s3sig&AWSAccessKeyId=AKID"
                 "&X-Goog-Signature=googsig&access_token=oauthtok&keep=visible")
    hop.responseheaders(f)
    text = hop.log.read_text()
    for value in ("AKIAEXAMPLE", "abc123sig", "FQoGZX", "azuresig", "s3sig", "AKID", "googsig", "oauthtok"):
        assert value not in text
    assert "X-Amz-Signature=REDACTED" in text and "keep=visible" in text and "se=2030" in text
    assert redact_url("https://h/?a=1&token=") == "https://h/?a=1&token="


# -- 3. a user name that is a token is masked like a password -------------------------------------

@pytest.mark.parametrize(("user", "password"), [
    ("ghp_16C7e42F292c6912E7710c838347Ae178B4a", "x-oauth-basic"), ("gho_abcdef0123456789", "x"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "x"), ("glpat-abcdefghij0123456789", "any"),
    ("npm_abcdefghijklmnopqrstuvwxyz0123456789", "p"), ("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI"),
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "p"), ("Zk3x9QpL2mN8vR4tY6wB1cD7", "p"),
])
def test_secret_user_names_are_never_shown(hop, caplog, user, password):
    assert secret_like_user(user, password) and Credential(user, password).display_user is None
    with caplog.at_level(logging.DEBUG, logger="credhop"):
        f = run_redirect(hop, f"https://{user}:{password}@blocked.example/s/")
        g = run_redirect(hop, f"https://{user}:{password}@registry.example/s/")
        send(hop, "https://registry.example/s/")
    text = hop.log.read_text() + caplog.text + f.response.text + f.comment + g.comment
    assert user not in text and user[:12] not in text
    assert all(r.get("user") is None for r in hop.records() if r.get("fingerprint"))


@pytest.mark.parametrize(("user", "password"), [("aws", "t0ken"), ("__token__", "pypi-AgEIcHlwaS5vcmc"),
                                                ("oauth2", "glpat-x"), ("x-access-token", "ghs_abc")])
def test_ordinary_user_names_stay_visible(user, password):
    assert not secret_like_user(user, password) and Credential(user, password).display_user == user


# -- 4. compressed 3xx bodies --------------------------------------------------------------------

def _zstd(data: bytes) -> bytes:
    from mitmproxy.net import encoding

    return encoding.encode(data, "zstd")


@pytest.mark.parametrize(("encoding", "compress"), [
    ("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", lambda d: zlib.compress(d)[2:-4]),
    ("br", brotli.compress), ("zstd", _zstd), ("x-gzip", gzip.compress),
])
@pytest.mark.parametrize("client_version", ["HTTP/1.1", "HTTP/2.0"])
def test_a_compressed_redirect_body_is_decoded_and_scrubbed_as_it_streams(hop, encoding, compress, client_version):
    location = f"https://aws:{ENCODED}@registry.example/s/"
    f = redirect(location)
    f.request.http_version = client_version
    f.response.headers["content-encoding"] = encoding
    f.response.stream = True  # as stream_large_bodies would
    hop.responseheaders(f)
    body = compress(f'<a href="{location}">moved</a>'.encode() * 20)
    out = b"".join(c for i in range(0, len(body), 5) for c in f.response.stream(body[i:i + 5]))
    out += b"".join(f.response.stream(b""))
    assert "content-encoding" not in f.response.headers
    assert out == b'<a href="https://registry.example/s/">moved</a>' * 20


@pytest.mark.parametrize("encoding", ["compress", "gzip, br", "x-unknown"])
def test_a_body_in_an_encoding_credhop_cannot_read_is_dropped(hop, encoding):
    location = f"https://aws:{ENCODED}@registry.example/s/"
    f = redirect(location)
    f.response.headers["content-encoding"] = encoding
    f.response.stream = True
    hop.responseheaders(f)
    out = b"".join(c for data in (f'see {location}'.encode(), b"") for c in f.response.stream(data))
    assert out == b"" and "content-encoding" not in f.response.headers


def test_broken_gzip_is_cut_not_passed(hop):
    f = redirect(f"https://aws:{ENCODED}@registry.example/s/")
    f.response.headers["content-encoding"] = "gzip"
    f.response.stream = True
    hop.responseheaders(f)
    out = b"".join(c for data in (b"\x1f\x8b garbage " + ENCODED.encode(), b"") for c in f.response.stream(data))
    assert ENCODED.encode() not in out


def test_a_buffered_compressed_body_made_by_another_addon_is_scrubbed(hop):
    location = f"https://aws:{ENCODED}@registry.example/s/"
    f = tflow.tflow()
    f.request.url = "https://redirector.example/simple/pkg/"
    f.client_conn.peername = CLIENT
    f.response = http.Response.make(302, f"go to {location}", {"location": location})
    f.response.encode("gzip")
    hop.response(f)
    assert f.response.text == "go to https://registry.example/s/"
    weird = tflow.tflow()
    weird.request.url = "https://redirector.example/simple/pkg/"
    weird.response = http.Response.make(302, b"", {"location": location})
    weird.response.headers["content-encoding"] = "x-unknown"
    weird.response.raw_content = f"go to {location}".encode()
    hop.response(weird)
    assert weird.response.raw_content == b""


# -- 7. every 3xx with a Location ------------------------------------------------------------------

@pytest.mark.parametrize("status", [300, 305, 306, 399])
def test_any_3xx_with_a_location_is_handled(hop, status):
    f = run_redirect(hop, f"https://aws:{ENCODED}@registry.example/s/", status=status)
    assert f.response.headers["location"] == "https://registry.example/s/"
    assert "authorization" in send(hop, "https://registry.example/s/").request.headers


def test_304_is_not_a_redirect(hop):
    location = f"https://aws:{ENCODED}@registry.example/s/"
    assert run_redirect(hop, location, status=304).response.headers["location"] == location
    assert hop.records() == []


# -- 8. log forging through values from the network -------------------------------------------------

@pytest.mark.parametrize("user", ["ad%0D%0Acredhop [x#0] 1.2.3.4 inject: forged", "ad%1B[2K%1B[1Amin",
                                  "ad%E2%80%A8min", "ad%C2%85min"])
def test_controls_in_a_user_name_never_reach_a_line_raw(hop, caplog, user):
    with caplog.at_level(logging.DEBUG, logger="credhop"):
        f = run_redirect(hop, f"https://{user}:{ENCODED}@blocked.example/s/")
        g = run_redirect(hop, f"https://{user}:{ENCODED}@registry.example/s/")
    lines = [r.getMessage() for r in caplog.records if r.name == "credhop"]
    for text in lines + [f.comment, g.comment or "", f.response.text.removesuffix("\n")]:
        assert not any(c in text for c in "\r\n\x1b\u2028\x85"), repr(text)
    assert "authorization" not in send(hop, "https://registry.example/s/").request.headers  # refused


def test_unicode_line_separators_in_a_credential_are_refused():
    for sep in ("\u2028", "\u2029", "\x85"):
        assert Credential("aws", f"tok{sep}X-Evil: 1").problem()


def test_redactor_masks_remembered_forms_longest_first():
    r = Redactor()
    r.remember(Credential("aws", "p@ss:word/1").secret_forms())
    text = r("a p%40ss%3Aword%2F1 b p@ss:word/1 c p%40ss%3aword%2f1")
    assert "ss" not in text.replace("***", "")


def test_a_compressed_body_of_known_length_is_scrubbed_whole_and_encoded_again(hop):
    # mitmproxy buffers it (no stream_large_bodies): scrubbed in `response`, sent with its encoding
    location = f"https://aws:{ENCODED}@registry.example/s/"
    f = redirect(location)
    f.response.content = f'<a href="{location}">moved</a>'.encode()
    f.response.encode("gzip")
    hop.responseheaders(f)
    assert not f.response.stream
    hop.response(f)
    assert f.response.headers["content-encoding"] == "gzip"
    assert f.response.headers["content-length"] == str(len(f.response.raw_content))
    assert gzip.decompress(f.response.raw_content) == b'<a href="https://registry.example/s/">moved</a>'
