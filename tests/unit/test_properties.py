"""Properties of Location handling (hypothesis): urls.py, and the addon's hooks on any Location.

- stripping the userinfo changes nothing else;
- parse_location raises nothing but LocationError, whatever the text;
- the credential is bound to the origin a WHATWG parser (ada) gives;
- redaction never leaves the password (or the user, when the user is the token);
- no Location makes responseheaders / requestheaders / response raise.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ada_url
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mitmproxy.test import taddons, tflow

from credhop.addon import REDIRECTS, CredHop
from credhop.urls import (
    LocationError,
    Origin,
    _urllib_disagrees,
    parse_location,
    parsers_disagree,
    redact_url,
    request_url,
)
from tests.unit.addon_helpers import sync

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASES = (
    "http://redirector.example/simple/pkg/",
    "https://redirector.example:8443/a/b?c=d",
    "http://127.0.0.1:8081/c/x/start",
    "https://[::1]:8443/x",
)

# -- strategies -------------------------------------------------------------------------------------

HEADS = (
    "http://",
    "https://",
    "HTTP://",
    "ht\ttp://",
    "//",
    "\\\\",
    "/\\",
    "\\/",
    "http:",
    "https:",
    "http:/",
    "https:\\\\",
    "http:///",
    " \x01http://",
    "ftp://",
    "ws://",
    "",
    "/",
    "?",
    "#",
)
HOSTS = (
    "registry.example",
    "127.0.0.2",
    "127.0.0.2.",
    "2130706434",
    "0x7f.1",
    "0177.0.0.1",
    "[::1]",
    "[::ffff:127.0.0.2]",
    "[fe80::1%25lo]",
    "localhost",
    "ｌｏｃａｌｈｏｓｔ",
    "xn--bcher-kva.example",
    "bücher.example",
    "a%2eb",
    "a%40b",
    "sub.registry.example",
    "registry.example.evil",
    "",
    "exa\tmple.com",
    "h\x01",
    "[::1",
    "good\\@evil",
)
PORTS = ("", ":", ":0", ":443", ":0443", ":8080", ":65535", ":65536", ":99999", ":+1", ":-1", ":1e3")
SPECIAL = ":@/\\?#%[]. \t\"'<>\x00\x01\x7f\u00e4\uff20\uff0f\u2028"
TAILS = ("/", "/p/", "/p?q=1", "#frag", "?@evil/", "#@evil/", "\\@evil/", "/@evil", "/\\evil", "")

userinfo_text = st.lists(
    st.sampled_from([*SPECIAL, *"abcXYZ019-_%~!$&'()*+,;=", "%0d%0a", "%ff", "%40"]), max_size=12
).map("".join)


@st.composite
def locations(draw: st.DrawFn) -> str:
    """URL-shaped text: every parser corner (schemes, slashes, userinfo, hosts, ports) in some order."""
    head = draw(st.sampled_from(HEADS))
    userinfo = ""
    if draw(st.booleans()):
        user, password = draw(userinfo_text), draw(userinfo_text)
        userinfo = draw(
            st.sampled_from([f"{user}:{password}@", f"{user}@", f":{password}@", f"{user}:{password}@x@"])
        )
    host = draw(st.sampled_from(HOSTS) | st.text(st.sampled_from("ab.-0:[]%@\\"), max_size=8))
    tail = draw(st.sampled_from(TAILS) | st.text(max_size=10))
    return head + userinfo + host + draw(st.sampled_from(PORTS)) + tail


@st.composite
def serialized_locations(draw: st.DrawFn) -> str:
    """http(s) URLs with userinfo and any port (0 too), to be read in the parser's own serialization:
    the form most servers send, which `parsers_disagree` answers without urllib."""
    scheme = draw(st.sampled_from(["http://", "https://"]))
    userinfo = draw(st.sampled_from(["{u}:{p}@", "{u}@", ":{p}@", ""]))
    userinfo = userinfo.format(u=draw(userinfo_text), p=draw(userinfo_text))
    host = draw(st.sampled_from(HOSTS) | st.text(st.sampled_from("ab.-0:[]%@\\!$&'()*+,;=\"`{}~_"), max_size=8))
    port = draw(st.sampled_from(PORTS) | st.integers(0, 65535).map(":{}".format))
    tail = draw(st.sampled_from(TAILS) | st.text(max_size=10))
    return scheme + userinfo + host + port + tail


any_text = st.text(st.characters(blacklist_categories=[]), max_size=60)  # lone surrogates too
location_text = locations() | any_text
# header values as mitmproxy hands them over: bytes that are not UTF-8 arrive as U+DC80..U+DCFF
raw_byte = st.integers(0xDC80, 0xDCFF).map(chr)
wire_text = st.text(st.characters(blacklist_categories=["Cs"]) | raw_byte, max_size=60)
wire_location = locations() | wire_text


def _ada_origin(raw: str, base: str) -> Origin:
    url = ada_url.URL(raw, base)
    scheme = url.protocol[:-1]
    return Origin(
        scheme, url.hostname.strip("[]"), int(url.port) if url.port else {"http": 80, "https": 443}[scheme]
    )


# -- urls.py ----------------------------------------------------------------------------------------


@SETTINGS
@given(raw=location_text, base=st.sampled_from(BASES))
@example(raw="ht\ttp://u:p@good.example\\@evil.example/", base=BASES[0])
@example(raw="http://u:p\udcff@h/", base=BASES[0])
def test_parse_location_raises_only_location_error(raw: str, base: str) -> None:
    try:
        loc = parse_location(raw, base)
    except LocationError as e:
        assert "\n" not in str(e)
        return
    assert loc.origin.scheme in ("http", "https") and 0 <= loc.origin.port <= 65535
    assert isinstance(parsers_disagree(raw, loc), bool)
    assert isinstance(loc.redacted, str) and isinstance(loc.stripped, str)


@settings(max_examples=1500, deadline=None)
@given(text=serialized_locations() | locations(), base=st.sampled_from(BASES))
@example(text="http://u:p@127.0.0.2:0/", base=BASES[0])
@example(text="https://u:p@[::1]:0/x", base=BASES[0])
@example(text="https://u:p@h.example:443/", base=BASES[0])
@example(text="HTTP://u:p@registry.example/", base=BASES[0])
def test_parsers_disagree_on_a_serialized_location_as_urllib_reads_it(text: str, base: str) -> None:
    # parsers_disagree answers a Location in the parser's own form without asking urllib: the answer
    # must be urllib's, as the full check gives it; compared as booleans (no userinfo in the output)
    try:
        href = ada_url.URL(text, base).href
    except ValueError:
        return
    parsed = []
    for raw in (text, href):
        with contextlib.suppress(LocationError):
            parsed.append(parse_location(raw, base))
    for loc in parsed:
        as_written = loc.raw == href
        assert loc.canonical is as_written
        for raw in (text, href):  # the text it was parsed from, and (for the guard) the other one
            assert parsers_disagree(raw, loc) is _urllib_disagrees(raw, loc), "differs from urllib's reading"


@SETTINGS
@given(raw=location_text, base=st.sampled_from(BASES))
@example(raw="//u:p@h.example:8443/s/#frag", base=BASES[1])
@example(raw="https:u:p@h.example/", base=BASES[0])
@example(raw="http://u:p@h.exa\tmple/x", base=BASES[0])
def test_stripping_the_userinfo_changes_nothing_else(raw: str, base: str) -> None:
    try:
        loc = parse_location(raw, base)
    except LocationError:
        return
    if loc.credential is None:
        assert loc.stripped == raw  # nothing to move: left exactly as sent
        return
    original, stripped = ada_url.URL(raw, base), ada_url.URL(loc.stripped, base)
    original.username = ""
    original.password = ""
    assert stripped.href == original.href  # fragment, query, path, host, port: all as they were
    again = parse_location(loc.stripped, base)
    assert again.credential is None
    assert (again.url, again.origin, again.path) == (loc.url, loc.origin, loc.path)


@SETTINGS
@given(raw=location_text, base=st.sampled_from(BASES))
def test_the_credential_is_bound_to_the_origin_ada_gives(raw: str, base: str) -> None:
    try:
        loc = parse_location(raw, base)
    except LocationError:
        return
    assert loc.origin == _ada_origin(raw, base)
    assert _ada_origin(loc.url, base) == loc.origin  # the URL the client will request: same origin
    url = ada_url.URL(raw, base)
    if loc.credential is not None:
        decoded = (
            urllib.parse.unquote(url.username, errors="strict"),
            urllib.parse.unquote(url.password, errors="strict"),
        )
        assert (loc.credential.user, loc.credential.password) == decoded
    else:
        assert not url.username and not url.password


MARK = "Zq"  # starts every generated secret; no other generated part contains "Z"
plain = st.text(st.sampled_from("abc019-._~!$&'()*+,;=:"), max_size=8)
secret_part = st.text(
    st.sampled_from(list(" \t\"'<>%:@\\\u00e4\uff20abcdefXY0123456789!$&()*+,;=~")), min_size=2, max_size=16
)


@st.composite
def urls_with_secret(draw: st.DrawFn) -> tuple[str, str]:
    """(text, secret): a URL whose password, or user when there is no password, is `secret`."""
    secret = MARK + draw(secret_part)
    head = draw(
        st.sampled_from(["http://", "https://", "//", "https:", "\\\\", "/\\", "HTTP://", "ht\ttp://"])
    )
    if draw(st.booleans()):  # the password
        userinfo = draw(st.sampled_from([f"{{u}}:{secret}@", f":{secret}@"]))
    else:  # a user-only token (a ":" in it would start a password)
        secret = secret.replace(":", "")
        userinfo = draw(st.sampled_from([f"{secret}@", f"{secret}:@"]))
    host = draw(
        st.sampled_from(["h.example", "127.0.0.2:8080", "[::1]", "bad host", "h.example:99999", "%zz"])
    )
    tail = draw(st.sampled_from(["/", "/p?q=@x", "#@y", "", "/x y", "\\@evil/"]))
    return head + userinfo.replace("{u}", draw(plain).replace("Z", "")) + host + tail, secret


@SETTINGS
@given(
    case=urls_with_secret(),
    base=st.sampled_from(BASES),
    prefix=st.sampled_from(["", "see ", "Location: '", '<a href="']),
)
@example(case=("http://aws:Zqpa ss@h/", "Zqpa ss"), base=BASES[0], prefix="")
@example(case=("https:aws:Zqsecret@h/", "Zqsecret"), base=BASES[0], prefix="")
@example(case=("http://Zq00@127.0.0.2:8080\\@evil/", "Zq00"), base=BASES[0], prefix="")
@example(case=("http://Zq00:@h.example\\@evil/", "Zq00"), base=BASES[0], prefix="")
def test_redaction_never_leaves_the_secret(case: tuple[str, str], base: str, prefix: str) -> None:
    raw, secret = case
    forms = {secret, urllib.parse.unquote(secret), urllib.parse.quote(secret, safe="")}
    shown = [redact_url(prefix + raw)]
    try:
        loc = parse_location(raw, base)
        shown.append(loc.redacted)
    except LocationError as e:
        shown.append(str(e))
    for text in shown:
        for form in forms:
            assert form not in text or form in raw.replace(secret, ""), "secret left in redacted text"


@SETTINGS
@given(
    host=st.sampled_from(["127.0.0.2", "::1", "fe80::1", "registry.example", "::ffff:7f00:2"]),
    port=st.integers(1, 65535),
    scheme=st.sampled_from(["http", "https"]),
    path=st.sampled_from(["/", "/a/b?c=d", "/%40"]),
)
def test_request_url_is_readable_for_any_host(host: str, port: int, scheme: str, path: str) -> None:
    url = ada_url.URL(request_url(scheme, host, port, path))
    assert _ada_origin(url.href, url.href) == Origin(scheme, host, port)


# -- the addon's hooks ------------------------------------------------------------------------------

RULES = """\
rules:
  - {name: blocker, match: {path_prefix: /block}, action: block}
  - {name: stripper, match: {path_prefix: /strip}, action: strip}
  - {name: keeper, match: {path_prefix: /keep}, action: keep}
  - {name: token, match: {path_prefix: /token}, action: inject,
     header: {name: PRIVATE-TOKEN, value: "{password}"}}
  - {name: everything, action: inject, on_leak: strip, allow_plaintext: true}
"""


@contextlib.contextmanager
def running_addon() -> Iterator[CredHop]:
    with tempfile.TemporaryDirectory() as tmp:
        rules, key = Path(tmp) / "rules.yaml", Path(tmp) / "key"
        rules.write_text(RULES)
        key.write_text(secrets.token_hex(32))
        addon = CredHop()
        with taddons.context(addon) as tctx:
            tctx.configure(
                addon,
                credhop_rules=str(rules),
                credhop_log=str(Path(tmp) / "hops.jsonl"),
                credhop_fingerprint_key=str(key),
                confdir=tmp,
            )
            yield addon
            addon.done()


def redirect_flow(url: str, status: int, locations: list[str], headers: list[tuple[str, str]]) -> Any:
    f = tflow.tflow(resp=True)
    assert f.response is not None
    f.request.url = url
    f.client_conn.peername = ("10.0.0.5", 40000)
    for name, value in headers:
        f.request.headers.add(name, value)
    f.response.status_code = status
    f.response.headers.pop("location", None)
    for value in locations:
        f.response.headers.add("location", value)
    return f


def follow_up(url: str, headers: list[tuple[str, str]]) -> Any:
    f = tflow.tflow()
    f.request.url = url
    f.client_conn.peername = ("10.0.0.5", 40001)
    for name, value in headers:
        f.request.headers.add(name, value)
    return f


secret_headers = st.lists(
    st.tuples(
        st.sampled_from(["Authorization", "Cookie", "X-API-Key", "Proxy-Authorization"]),
        st.text(st.characters(blacklist_categories=["Cs", "Cc"]) | raw_byte, max_size=20),
    ),
    max_size=3,
)
request_urls = st.sampled_from(
    [
        "https://redirector.example/simple/pkg/",
        "http://127.0.0.1:8081/block/x",
        "https://r.example/strip/",
        "https://r.example/keep/",
        "http://r.example/token/a",
    ]
)


def test_no_location_makes_a_hook_raise() -> None:
    with running_addon() as addon:

        @SETTINGS
        @given(
            url=request_urls,
            status=st.sampled_from([*REDIRECTS, 200, 300, 304]),
            locations=st.lists(wire_location, max_size=2),
            headers=secret_headers,
        )
        @example(url="https://r.example/", status=302, locations=["https://u:%0d%0aX:%201@h/"], headers=[])
        @example(url="https://r.example/", status=302, locations=["http://u:p\udcff@h/"], headers=[])
        @example(url="https://r.example/", status=302, locations=["https://a:b@h/" + "x" * 70000], headers=[])
        def run(url: str, status: int, locations: list[str], headers: list[tuple[str, str]]) -> None:
            f = redirect_flow(url, status, locations, headers)
            sync(addon.requestheaders(f))
            sync(addon.responseheaders(f))
            sync(addon.response(f))
            for value in locations[:1]:
                try:
                    target = ada_url.URL(value, url)
                except ValueError:
                    continue
                if target.protocol not in ("http:", "https:"):
                    continue
                target.username = ""
                target.password = ""
                target.hash = ""
                try:
                    g = follow_up(target.href, headers)
                except ValueError:  # mitmproxy refuses the URL (host "~" ...): no client sends it
                    continue
                sync(addon.requestheaders(g))
                g.response = tflow.tresp(status_code=200)
                sync(addon.responseheaders(g))
                sync(addon.response(g))

        run()


# -- regressions: hook failures the security corpus found outside urls.py -----------------------------


def test_a_non_utf8_client_header_does_not_make_a_hook_raise() -> None:
    # mitmproxy hands a non-UTF-8 byte over as a lone surrogate; the fingerprint used to crash on it
    with running_addon() as addon:
        f = redirect_flow(
            "https://r.example/", 302, ["https://aws:tok@registry.example/"], [("Cookie", "n=caf\udce9")]
        )
        sync(addon.responseheaders(f))
        assert f.response.headers["location"] == "https://registry.example/"


def test_a_repeated_leaked_header_does_not_make_a_hook_raise() -> None:
    # two Cookie fields (as HTTP/2 clients send them) used to be deleted twice: KeyError
    with running_addon() as addon:
        own = [("Cookie", "session=abcdefgh"), ("Cookie", "session=abcdefgh")]
        f = redirect_flow("https://origin.example/x", 302, ["https://cdn.example/x"], own)
        sync(addon.requestheaders(f))
        sync(addon.responseheaders(f))
        g = follow_up("https://cdn.example/x", own)
        sync(addon.requestheaders(g))
        assert "cookie" not in g.request.headers


def test_a_huge_credential_is_refused() -> None:
    # a 64 KiB userinfo used to become an 87 KiB Authorization header
    with running_addon() as addon:
        f = redirect_flow(
            "https://r.example/", 302, ["https://aws:" + "x" * 65536 + "@registry.example/"], []
        )
        sync(addon.responseheaders(f))
        g = follow_up("https://registry.example/", [])
        sync(addon.requestheaders(g))
        assert "authorization" not in g.request.headers


def test_a_redirector_on_an_ipv6_literal_is_understood() -> None:
    # mitmproxy's Request.url writes IPv6 hosts bare (http://::1:8081/), which no parser reads back
    with running_addon() as addon:
        f = redirect_flow("http://[::1]:8081/simple/", 302, ["https://aws:tok@registry.example/"], [])
        sync(addon.responseheaders(f))
        g = follow_up("https://registry.example/", [])
        sync(addon.requestheaders(g))
        assert "authorization" in g.request.headers
