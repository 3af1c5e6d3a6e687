"""The adversarial redirect corpus: one row per case, run by tests/e2e/test_security_corpus.py.

Each row names the raw `Location` a redirector answers (a template, see `expand`), which origins of
the pool must receive the Location's credential (every other origin must receive nothing), and the
CVE, advisory or spec section the case comes from. `tests/unit/test_differential.py` reuses the
Locations to compare credhop's parser with `urllib.parse`.

Template fields: `{a}` `{b}` ... the authority (`host:port`) of a pool origin, `{pa}` `{pb}` ... the
port numbers, `{tok}` / `{tok2}` the case's secrets as percent-encoded userinfo passwords, `{p}` the
case's own path prefix (`/c/<id>`). A Location is sent as the UTF-8 bytes of the expanded text;
`\\udcXX` surrogates become the raw byte XX (invalid UTF-8 on the wire).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Origin:
    """A pool origin: what the client addresses; `endpoint` is the socket behind it (None: nothing
    listens, and mitmdump's block_list answers before any DNS lookup; the hop log is the witness)."""

    scheme: str
    host: str
    port: str  # the name of a port in `Ports`
    endpoint: str | None


# Every origin the client probes after every case. Endpoints sniff TLS, so one socket serves an
# http and an https origin: a credential bound to one must not reach the other.
POOL: dict[str, Origin] = {
    "a": Origin("http", "127.0.0.1", "pa", "A"),  # the usual redirector
    "a_s": Origin("https", "127.0.0.1", "pa", "A"),
    "b": Origin("http", "127.0.0.2", "pb", "B"),  # the usual target
    "b_s": Origin("https", "127.0.0.2", "pb", "B"),
    "b2": Origin("http", "127.0.0.2", "pb2", "B2"),  # same host, other port
    "b2_s": Origin("https", "127.0.0.2", "pb2", "B2"),
    "c": Origin("http", "127.0.0.3", "pb", "C"),  # other host, same port number
    "c_s": Origin("https", "127.0.0.3", "pb", "C"),
    "b20": Origin("http", "127.0.0.20", "pb", "F"),  # look-alike of 127.0.0.2 (prefix match)
    "d": Origin("http", "127.0.0.4", "pd", "D"),
    "e_s": Origin("https", "127.0.0.5", "pe", "E"),
    "lh": Origin("http", "localhost", "pl", "L"),
    "lh_s": Origin("https", "localhost", "pl", "L"),
    "lh_ip": Origin("http", "127.0.0.1", "pl", "L"),  # same socket as localhost, another origin
    "b_mapped": Origin("http", "::ffff:7f00:2", "pb", "B"),  # 127.0.0.2 spelled as IPv4-mapped IPv6
    "v6": Origin("http", "::1", "p6", "V6"),
    "v6_s": Origin("https", "::1", "p6", "V6"),
    # names that resolve nowhere: mitmdump answers them itself (block_list), after credhop decided
    "lh_sub": Origin("http", "sub.localhost", "pl", None),  # subdomain
    "lh_like": Origin("http", "evil-localhost", "pl", None),  # look-alike suffix
    "lh_ext": Origin("http", "localhost.evil.test", "pl", None),  # look-alike prefix
    "lh_dot": Origin("http", "localhost.", "pl", None),  # trailing dot: another origin for WHATWG
    "plain": Origin("http", "registry.test", "pl", None),  # plaintext, not loopback
}

# Ports fixed for the unit tests (differential test); the e2e test uses free ports.
UNIT_PORTS = {"pa": 8081, "pb": 8082, "pb2": 8083, "pd": 8084, "pe": 8085, "pl": 8086, "p6": 8087}

PAD_64K = "x" * 65536
BASE_USER = "aws"


@dataclass(frozen=True)
class Case:
    id: str
    location: str | tuple[str, ...]  # raw Location template(s); a tuple sends several headers
    expect: frozenset[str] | Mapping[str, str]  # origins that get {tok} (or origin -> "tok"/"tok2")
    ref: str  # the CVE, advisory or spec section behind the case
    start: str = "a"  # the origin that answers the first request with the redirect
    status: int = 302
    hops: tuple[tuple[str, str, str], ...] = ()  # (origin, path below {p}, Location) further redirects
    reason: str | None = None  # expected in the hop log's `reason` for the first redirect
    client_headers: tuple[tuple[str, str], ...] = ()  # the client's own headers on the first request
    resend: bool = False  # ... and on every follow-up too, like a client with a redirect-leak CVE
    leak: str | None = None  # header the hop log must report as leaked (and the target must not get)
    forge: tuple[str, str] | None = None  # after following: request origin X with the Host of origin Y
    public: bool = False  # {tok} ends up outside the userinfo (a path) by design: no leak scan for it
    xfail: str | None = None  # a known bug outside urls.py: strict xfail with this reason
    note: str = field(default="", compare=False)

    @property
    def receivers(self) -> dict[str, str]:
        if isinstance(self.expect, Mapping):
            return dict(self.expect)
        return {key: "tok" for key in self.expect}

    @property
    def locations(self) -> tuple[str, ...]:
        return self.location if isinstance(self.location, tuple) else (self.location,)


def none() -> frozenset[str]:
    return frozenset()


def only(*keys: str) -> frozenset[str]:
    return frozenset(keys)


CASES: tuple[Case, ...] = (
    # -- where a credential goes: exactly one origin -----------------------------------------------
    Case("exact-origin", "http://aws:{tok}@{b}{p}/next", only("b"),
         "RFC 6454 §4 (origin = scheme, host, port); README contract"),
    Case("https-target", "https://aws:{tok}@{b}{p}/next", only("b_s"),
         "RFC 6454 §4; requests CVE-2018-18074 (never the http origin on the same host and port)"),
    Case("https-never-to-http", "https://aws:{tok}@{c}{p}/next", only("c_s"),
         "requests CVE-2018-18074, follow-redirects CVE-2022-0536 (https -> http downgrade)", start="a_s"),
    Case("explicit-http-from-https", "http://aws:{tok}@{b}{p}/next", only("b"),
         "curl CVE-2022-27776 (other scheme is another origin; loopback http is allowed)", start="a_s"),
    Case("other-port", "http://aws:{tok}@{b2}{p}/next", only("b2"),
         "curl CVE-2022-27776 (same host, another port)"),
    Case("other-host-same-port", "http://aws:{tok}@{c}{p}/next", only("c"),
         "urllib3 CVE-2018-20060, follow-redirects CVE-2022-0155"),
    Case("ipv4-lookalike", "http://aws:{tok}@127.0.0.2:{pb}{p}/next", only("b"),
         "RFC 6454 §5 (origins compare exactly; 127.0.0.20 is not 127.0.0.2)"),
    Case("to-the-redirector-itself", "http://aws:{tok}@{a}{p}/self", only("a"),
         "RFC 9110 §10.2.2 (the Location names the origin, even the redirector's own)"),
    Case("not-back-to-redirector", "http://aws:{tok}@{b}{p}/back", only("b"),
         "Go CVE-2024-45336; Fetch §4.4 HTTP-redirect fetch",
         hops=(("b", "/back", "http://{a}{p}/home"),)),
    Case("chain-a-b1-b2-a", "http://aws:{tok}@{b}{p}/1", only("b"),
         "Go CVE-2024-45336 (a -> b/1 -> b/2 -> a)",
         hops=(("b", "/1", "{p}/2"), ("b", "/2", "http://{a}{p}/end"))),
    Case("chain-second-credential", "http://aws:{tok}@{b}{p}/1", {"b": "tok", "c": "tok2"},
         "Go CVE-2024-45336; each credential bound to its own origin",
         hops=(("b", "/1", "http://aws:{tok2}@{c}{p}/2"),)),
    Case("localhost-exact", "http://aws:{tok}@localhost:{pl}{p}/next", only("lh"),
         "Go CVE-2023-45289 (no subdomain or look-alike match); RFC 6454 §5"),
    Case("subdomain-not-parent", "http://aws:{tok}@sub.localhost:{pl}{p}/next", only("lh_sub"),
         "Go CVE-2023-45289 (a subdomain's credential never reaches the parent)"),
    Case("lookalike-suffix-target", "http://aws:{tok}@evil-localhost:{pl}{p}/next", none(),
         "Go CVE-2023-45289; README: plaintext http only on loopback", reason="plaintext"),
    Case("plaintext-elsewhere", "http://aws:{tok}@registry.test:{pl}{p}/next", none(),
         "RFC 7617 §4 (Basic is cleartext); README: plaintext refused off loopback", reason="plaintext"),
    Case("trailing-dot-name", "http://aws:{tok}@localhost.:{pl}{p}/next", none(),
         "WHATWG URL host parsing keeps the dot (`localhost.` is not `localhost`, so not loopback); "
         "curl CVE-2022-27779", reason="plaintext"),
    Case("trailing-dot-ipv4", "http://aws:{tok}@127.0.0.2.:{pb}{p}/next", only("b"),
         "WHATWG URL IPv4 parser (a trailing dot is dropped)"),
    Case("uppercase-scheme-and-host", "HTTP://AWS:{tok}@LOCALHOST:{pl}{p}/next", only("lh"),
         "RFC 3986 §6.2.2.1 / WHATWG (scheme and host are case-insensitive)"),
    Case("ipv6-literal", "http://aws:{tok}@[::1]:{p6}{p}/next", only("v6"), "RFC 3986 §3.2.2 (IP-literal)"),
    Case("ipv6-zone-id", "http://aws:{tok}@[::1%25lo]:{p6}{p}/next", none(),
         "RFC 6874 vs WHATWG URL (no zone ids); Go CVE-2023-45289", reason="unparseable"),
    Case("ipv6-raw-zone-id", "http://aws:{tok}@[::1%lo]:{p6}{p}/next", none(),
         "RFC 6874 §2 (zone id must be %25-encoded)", reason="unparseable"),
    Case("ipv4-mapped-ipv6", "http://aws:{tok}@[::ffff:127.0.0.2]:{pb}{p}/next", only("b_mapped"),
         "RFC 4291 §2.5.5.2 (one address, two spellings: bound to the spelling, not sent to 127.0.0.2)"),
    Case("redirector-on-ipv6", "http://aws:{tok}@{b}{p}/next", only("b"),
         "RFC 3986 §3.2.2 (mitmproxy's Request.url writes IPv6 hosts bare: http://::1:8080/)", start="v6"),
    Case("ipv4-decimal", "http://aws:{tok}@2130706434:{pb}{p}/next", none(),
         "WHATWG URL IPv4 parser (2130706434 = 127.0.0.2; urllib sees a name)", reason="disagree"),
    Case("ipv4-hex-short", "http://aws:{tok}@0x7f.2:{pb}{p}/next", none(),
         "WHATWG URL IPv4 parser (0x7f.2 = 127.0.0.2)", reason="disagree"),
    Case("ipv4-octal", "http://aws:{tok}@0177.0.0.2:{pb}{p}/next", none(),
         "Python CVE-2021-29921, Go CVE-2021-29923 (leading-zero octal)", reason="disagree"),
    Case("port-leading-zero", "http://aws:{tok}@127.0.0.2:0{pb}{p}/next", only("b"),
         "WHATWG URL port state, RFC 3986 §3.2.3 (`:0443` is port 443)"),
    Case("port-too-large", "http://aws:{tok}@127.0.0.2:{pb_wrap}{p}/next", none(),
         "WHATWG URL port state (> 65535 is a failure; no 16-bit wrap-around)", reason="unparseable"),
    # -- parser confusion: refused when parsers disagree -------------------------------------------
    Case("backslash-before-at", "http://aws:{tok}@{b}\\@{c}{p}/next", none(),
         "WHATWG URL authority state (`\\` ends it) vs RFC 3986 / urllib", reason="disagree"),
    Case("backslash-userinfo-only-urllib-sees", "http://{b}\\aws:{tok}@{c}{p}/next", none(),
         "WHATWG URL authority state; Orange Tsai, 'A New Era of SSRF' (2017)", public=True),
    Case("tab-in-scheme-and-backslash", "ht\ttp://aws:{tok}@{b}\\@{c}{p}/next", none(),
         "WHATWG URL basic parser (tabs removed); Python CVE-2022-0391", reason="disagree"),
    Case("tab-in-host", "http://aws:{tok}@127.0.0\t.2:{pb}{p}/next", only("b"),
         "WHATWG URL basic parser (ASCII tab or newline removed); Python CVE-2022-0391"),
    Case("leading-c0-and-space", "\x01\x1f http://aws:{tok}@{b}{p}/next", only("b"),
         "WHATWG URL (leading C0 control or space stripped); Python CVE-2023-24329"),
    Case("control-char-in-host", "http://aws:{tok}@127.0.0.2\x01:{pb}{p}/next", none(),
         "WHATWG URL forbidden host code points", reason="unparseable"),
    Case("space-in-password", "http://aws:{tok} and more@{b}{p}/next", only("b"),
         "WHATWG URL userinfo percent-encode set (space is encoded, not an end); RFC 3986 §3.2.1"),
    Case("several-at-signs", "http://aws:{tok}@{c}@{b}{p}/next", only("b"),
         "WHATWG URL authority state and RFC 3986 §3.2.1 (the last `@` ends the userinfo)"),
    Case("percent-encoded-at-in-host", "http://aws:{tok}@127.0.0.3%40{b}{p}/next", none(),
         "curl CVE-2022-27780 (percent-encoded separator in host)", reason="unparseable"),
    Case("percent-encoded-dot-in-host", "http://aws:{tok}@127%2e0.0.2:{pb}{p}/next", none(),
         "curl CVE-2022-27780; WHATWG host parser percent-decodes, urllib does not", reason="disagree"),
    Case("hash-before-at", "http://aws:{tok}@{b}{p}/next#@{c}/", only("b"),
         "curl CVE-2016-8624 (`#` ends the authority)"),
    Case("hash-ends-host", "http://{b}#aws:{tok}@{c}/", none(),
         "curl CVE-2016-8624; RFC 3986 §3.2 (the userinfo is in the fragment)", public=True),
    Case("query-before-at", "http://aws:{tok}@{b}{p}/next?@{c}/", only("b"),
         "RFC 3986 §3.2 (`?` ends the authority)"),
    Case("fullwidth-host", "http://aws:{tok}@ｌｏｃａｌｈｏｓｔ:{pl}{p}/next", only("lh"),
         "UTS #46 mapping in WHATWG host parsing; Python CVE-2019-9636"),
    Case("fullwidth-at", "http://aws:{tok}＠{c}@{b}{p}/next", none(),
         "Python CVE-2019-9636 / CVE-2019-10160 (NFKC turns U+FF20 into `@`)", reason="disagree"),
    Case("fullwidth-solidus", "http://aws:{tok}@{b}／@{c}{p}/next", none(),
         "Python CVE-2019-9636 (NFKC turns U+FF0F into `/`)", reason="disagree"),
    Case("scheme-relative", "//aws:{tok}@{b}{p}/next", only("b"),
         "RFC 3986 §4.2 (network-path reference) and §5.2"),
    Case("scheme-relative-from-https", "//aws:{tok}@{b}{p}/next", only("b_s"),
         "RFC 3986 §5.2 (takes the https scheme of the redirector)", start="a_s"),
    Case("scheme-relative-backslash", "//aws:{tok}@{b}\\@{c}{p}/next", none(),
         "WHATWG URL authority state vs RFC 3986 §5.2", reason="disagree"),
    Case("backslash-relative", "\\\\aws:{tok}@{b}{p}/next", none(),
         "WHATWG URL special authority ignore slashes state (urllib: a path)", reason="disagree"),
    Case("slash-backslash-relative", "/\\aws:{tok}@{b}{p}/next", none(),
         "WHATWG URL relative slash state (urllib: a path)", reason="disagree"),
    Case("scheme-without-slashes", "https:aws:{tok}@{b}{p}/next", none(),
         "WHATWG URL special authority slashes state (urllib: no host)", reason="disagree"),
    Case("same-scheme-without-slashes", "http:aws:{tok}@{b}{p}/next", none(),
         "WHATWG URL special relative or authority state (a path on the redirector)", public=True),
    Case("non-http-scheme", "ftp://aws:{tok}@{b}{p}/next", none(),
         "Fetch §4.4 HTTP-redirect fetch (only HTTP(S) schemes)", reason="not http or https"),
    Case("websocket-scheme", "wss://aws:{tok}@{b}{p}/next", none(),
         "Fetch §4.4 HTTP-redirect fetch", reason="not http or https"),
    # -- values --------------------------------------------------------------------------------------
    Case("crlf-in-password", "http://aws:{tok}%0d%0aX-Evil:%201@{b}{p}/next", none(),
         "RFC 9110 §5.5 (no CR/LF in field values), CWE-113", reason="control character"),
    Case("nul-in-user", "http://a%00ws:{tok}@{b}{p}/next", none(),
         "RFC 9110 §5.5 (NUL)", reason="control character"),
    Case("invalid-utf8-percent", "http://aws:{tok}%ff%fe@{b}{p}/next", none(),
         "RFC 7617 §2.1 (charset UTF-8)", reason="UTF-8"),
    Case("invalid-utf8-raw-byte", "http://aws:{tok}\udcff@{b}{p}/next", none(),
         "RFC 9110 §5.5 (obs-text); WHATWG URL (UTF-8 input)", reason="unparseable"),
    Case("utf8-password", "http://aws:p\u00e4ss-{tok}@{b}{p}/next", only("b"),
         "RFC 7617 §2.1 (Basic in UTF-8); WHATWG userinfo percent-encode set"),
    Case("empty-userinfo", "http://@{b}{p}/next", none(), "WHATWG URL (empty credentials are none)"),
    Case("empty-user-and-password", "http://:@{b}{p}/next", none(), "WHATWG URL (empty credentials: none)"),
    Case("password-only", "http://:{tok}@{b}{p}/next", only("b"), "RFC 7617 §2 (empty user-id)"),
    Case("token-as-user", "http://{tok}@{b}{p}/next", only("b"), "RFC 3986 §3.2.1 (user only)"),
    Case("huge-userinfo-64k", "http://aws:{tok}{pad64k}@{b}{p}/next", none(),
         "RFC 9110 §5.4 (servers cap fields at 8-16 KiB); issue 4 (64 KiB userinfo)", reason="longer than"),
    Case("several-location-headers", ("http://aws:{tok}@{b}{p}/next", "http://aws:{tok2}@{c}{p}/2"), none(),
         "RFC 9110 §10.2.2 (one URI-reference); Fetch 'location URL'", reason="2 Location headers"),
    Case("status-301", "http://aws:{tok}@{b}{p}/next", only("b"), "RFC 9110 §15.4.2", status=301),
    Case("status-303", "http://aws:{tok}@{b}{p}/next", only("b"), "RFC 9110 §15.4.4", status=303),
    Case("status-307", "http://aws:{tok}@{b}{p}/next", only("b"), "RFC 9110 §15.4.8", status=307),
    Case("status-308", "http://aws:{tok}@{b}{p}/next", only("b"), "RFC 9110 §15.4.9", status=308),
    # -- rules ------------------------------------------------------------------------------------------
    Case("strip-rule", "http://aws:{tok}@{b}{p}/next", none(), "README rules: strip"),
    Case("block-rule", "http://aws:{tok}@{b}{p}/next", none(), "README rules: block"),
    # -- Host header versus the real destination --------------------------------------------------------
    Case("forged-host-absolute-form", "http://aws:{tok}@{b}{p}/1", {"b": "tok", "c": "tok2"},
         "RFC 9112 §3.2.2 (a proxy ignores Host for absolute-form): GET http://c/ with Host: b gets c's",
         hops=(("b", "/1", "http://aws:{tok2}@{c}{p}/2"),), forge=("c", "b")),
    Case("forged-host-absolute-form-reverse", "http://aws:{tok}@{b}{p}/1", {"b": "tok", "c": "tok2"},
         "RFC 9112 §3.2.2: GET http://b/ with Host: c gets b's",
         hops=(("b", "/1", "http://aws:{tok2}@{c}{p}/2"),), forge=("b", "c")),
    Case("forged-host-third-party", "http://aws:{tok}@{b}{p}/next", only("b"),
         "RFC 9112 §3.2.2: GET http://d/ with Host: b gets nothing", forge=("d", "b")),
    Case("forged-host-in-tunnel", "https://aws:{tok}@{b}{p}/1", {"b_s": "tok", "c_s": "tok2"},
         "RFC 9110 §7.2; mitmproxy treats a CONNECT tunnel transparently: its target is the destination",
         hops=(("b", "/1", "https://aws:{tok2}@{c}{p}/2"),), forge=("c_s", "b_s")),
    # -- clients that leak their own secrets across a redirect (rule `leak` has on_leak: strip) ----------
    Case("leak-authorization", "http://{c}{p}/next", none(),
         "requests CVE-2014-1829, urllib3 CVE-2018-20060, follow-redirects CVE-2022-0536",
         client_headers=(("Authorization", "Bearer own-{tok}"),), leak="authorization", resend=True),
    Case("leak-cookie", "http://{c}{p}/next", none(),
         "urllib3 CVE-2023-43804, follow-redirects CVE-2022-0155",
         client_headers=(("Cookie", "session={tok}"),), leak="cookie", resend=True),
    Case("leak-api-key-downgrade", "http://{a}{p}/next", none(),
         "curl CVE-2022-27776 (same host, https -> http); credhop_secret_headers",
         start="a_s", client_headers=(("X-API-Key", "key-{tok}"),), leak="x-api-key", resend=True),
    Case("leak-proxy-authorization", "http://{c}{p}/next", none(),
         "urllib3 CVE-2024-37891, Go CVE-2025-4673",
         client_headers=(("Proxy-Authorization", "Basic {tok}"),), resend=True),
    Case("leak-but-location-credential", "http://aws:{tok2}@{c}{p}/next",
         {"c": "tok2"}, "follow-redirects CVE-2022-0536; only the Location's credential reaches c",
         client_headers=(("Authorization", "Bearer own-{tok}"),), leak="authorization", resend=True),
    Case("leak-two-cookie-fields", "http://{c}{p}/next", none(),
         "urllib3 CVE-2023-43804; RFC 9113 §8.2.3 (HTTP/2 clients split Cookie into several fields)",
         client_headers=(("Cookie", "a={tok}"), ("Cookie", "b={tok}")), resend=True, leak="cookie"),
    Case("leak-to-ipv6", "http://{v6}{p}/next", none(),
         "follow-redirects CVE-2022-0536; the follow-up to an IPv6 literal is still linked to its redirect",
         client_headers=(("Authorization", "Bearer own-{tok}"),), resend=True, leak="authorization"),
    # -- a client header credhop cannot decode must not switch credhop off ----------------------------
    Case("latin1-cookie-on-redirect", "http://aws:{tok}@{b}{p}/next", only("b"),
         "RFC 9110 §5.5 (obs-text: a non-UTF-8 Cookie byte)", client_headers=(("Cookie", "name=caf\udce9"),)),
    Case("block-latin1-cookie", "http://aws:{tok}@{b}{p}/next", none(),
         "RFC 9110 §5.5; a client header must not switch a block rule off",
         client_headers=(("Cookie", "name=caf\udce9"),)),
)


def case_path(case: Case) -> str:
    return f"/c/{case.id}"


def expand(template: str, case: Case, ports: Mapping[str, int], tokens: Mapping[str, str]) -> str:
    """The template's text for these ports and secrets."""
    fields: dict[str, str] = {name: str(port) for name, port in ports.items()}
    for key, origin in POOL.items():
        host = f"[{origin.host}]" if ":" in origin.host else origin.host
        fields[key] = f"{host}:{ports[origin.port]}"
    fields.update({name: urllib.parse.quote(value, safe="") for name, value in tokens.items()})
    fields["p"] = case_path(case)
    fields["pad64k"] = PAD_64K
    fields["pb_wrap"] = str(ports["pb"] + 65536)
    return template.format(**fields)


def wire(text: str) -> bytes:
    """Header bytes for a Location text: UTF-8, with surrogates as the raw bytes they stand for."""
    return text.encode("utf-8", "surrogateescape")
