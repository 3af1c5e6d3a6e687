"""The addon in transparent mode: names checked against the original destination; upstream mode's
parent-proxy credential; the warning for a proxy open beyond loopback."""

from __future__ import annotations

import logging
import socket

from mitmproxy.proxy import mode_specs
from mitmproxy.test import tflow

from credhop import exposure
from credhop.destination import Resolver
from tests.secrets_check import assert_no_leak
from tests.unit.addon_helpers import ENCODED, FORMS, TOKEN, basic, hop  # noqa: F401  (hop is a fixture)

CLIENT = ("10.0.1.10", 50000)
INDEX, REDIRECTOR, EVIL = "10.0.9.20", "10.0.9.21", "10.0.9.22"
DNS = {"registry.example": INDEX, "redirector.example": REDIRECTOR, "evil.example": EVIL}


def use_table(h) -> list[str]:
    """The addon's resolver answers from a fixed table; returns the names it was asked."""
    asked: list[str] = []

    async def getaddrinfo(name, port, type=0):
        asked.append(name)
        if name not in DNS:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (DNS[name], 0))]

    h.addon.resolver = Resolver(getaddrinfo=getaddrinfo)
    return asked


def transparent(address, path, host=None, sni=None, scheme="https", port=None, resp=False, mode="transparent"):
    """A flow as mitmproxy's transparent mode makes it: request.host is the original destination."""
    port = port or (443 if scheme == "https" else 80)
    f = tflow.tflow(resp=resp)
    f.client_conn.proxy_mode = mode_specs.ProxyMode.parse(mode)
    f.client_conn.peername = CLIENT
    f.client_conn.sockname = (address, port)
    f.client_conn.sni = sni
    f.request.scheme, f.request.host, f.request.port, f.request.path = scheme, address, port, path
    f.request.authority = ""
    if host:
        f.request.host_header = host
    return f


def grant(h, scheme="https"):
    f = transparent(REDIRECTOR, "/simple/pkg/", "redirector.example", "redirector.example" if scheme == "https" else None,
                    scheme=scheme, resp=True)
    f.response.status_code = 302
    f.response.headers["location"] = f"{scheme}://aws:{ENCODED}@registry.example/pypi/simple/pkg/"
    h.responseheaders(f)
    h.response(f)
    return f


def test_the_follow_up_to_the_address_a_verified_name_resolves_to_gets_the_credential(hop):
    use_table(hop)
    grant(hop)
    f = transparent(INDEX, "/pypi/simple/pkg/", "registry.example", "registry.example")
    hop.requestheaders(f)
    assert f.request.headers["authorization"] == basic("aws", TOKEN)
    redirect_rec, inject_rec = [r for r in hop.records() if r["event"] in ("redirect", "inject")]
    assert redirect_rec["url"] == "https://redirector.example/simple/pkg/"
    assert redirect_rec["target"] == "https://registry.example"
    assert inject_rec["url"] == "https://registry.example/pypi/simple/pkg/" and inject_rec["hop"] == 1
    assert inject_rec["chain"] == redirect_rec["chain"]
    assert f.metadata["credhop_destination"]["how"] == "verified"
    # a later download on the same origin (reuse), and over plain http nothing (another origin)
    wheel = transparent(INDEX, "/pypi/files/pkg.whl", "registry.example", "registry.example")
    hop.requestheaders(wheel)
    assert wheel.request.headers["authorization"] == basic("aws", TOKEN)
    plain = transparent(INDEX, "/pypi/files/pkg.whl", "registry.example", scheme="http")
    hop.requestheaders(plain)
    assert "authorization" not in plain.request.headers
    assert_no_leak("\n".join(map(str, hop.records())), FORMS, "hop log")


def test_forged_host_and_sni_to_another_address_get_nothing(hop):
    use_table(hop)
    grant(hop)
    for host, sni, address in [
        ("registry.example", "registry.example", EVIL),  # both forged
        ("registry.example", None, EVIL),
        (None, "registry.example", EVIL),
        ("registry.example", "evil.example", INDEX),  # disagreeing names, even at the right address
        ("registry.example:8443", "registry.example", INDEX),  # another port than the connection's
        ("registry.example", "registry.example", REDIRECTOR),  # the issuer's address
    ]:
        f = transparent(address, "/pypi/simple/pkg/", host, sni)
        hop.requestheaders(f)
        assert "authorization" not in f.request.headers, (host, sni, address)


def test_no_name_at_all_keeps_the_address_and_a_grant_for_the_address_still_works(hop):
    use_table(hop)
    f = transparent(REDIRECTOR, "/simple/pkg/", None, None, resp=True)
    f.response.status_code = 302
    f.response.headers["location"] = f"https://aws:{ENCODED}@{INDEX}/pypi/simple/pkg/"
    hop.responseheaders(f)
    follow = transparent(INDEX, "/pypi/simple/pkg/", INDEX)
    hop.requestheaders(follow)
    # no rule names the address (the rules match *.example hosts): credhop keeps the Location, logs it
    redirect_rec = [r for r in hop.records() if r["event"] == "redirect"][0]
    assert redirect_rec["url"] == f"https://{REDIRECTOR}/simple/pkg/"


def test_relative_locations_resolve_against_the_verified_name(hop):
    use_table(hop)
    f = transparent(INDEX, "/pypi/simple/pkg", "registry.example", "registry.example", resp=True)
    f.response.status_code = 301
    f.response.headers["location"] = "/pypi/simple/pkg/"
    hop.responseheaders(f)
    rec = [r for r in hop.records() if r["event"] == "redirect"][0]
    assert rec["target"] == "https://registry.example"


def test_regular_mode_never_asks_the_resolver_and_trusts_only_mitmproxys_host(hop):
    asked = use_table(hop)
    f = transparent(INDEX, "/simple/pkg/", "evil.example", "evil.example", resp=True, mode="regular")
    f.request.host = "redirector.example"
    f.request.host_header = "evil.example"
    f.response.status_code = 302
    f.response.headers["location"] = f"https://aws:{ENCODED}@registry.example/pypi/simple/pkg/"
    hop.responseheaders(f)
    g = transparent(INDEX, "/pypi/simple/pkg/", "evil.example", "evil.example", mode="regular")
    g.request.host = "registry.example"
    g.request.host_header = "evil.example"
    hop.requestheaders(g)
    assert g.request.headers["authorization"] == basic("aws", TOKEN)
    assert asked == [] and "credhop_destination" not in g.metadata
    assert [r for r in hop.records() if r["event"] == "redirect"][0]["url"] == "https://redirector.example/simple/pkg/"


def test_from_host_rules_see_the_verified_name(hop):
    use_table(hop)
    hop.rules.write_text("rules:\n  - name: from-redirector\n    match: {from_host: redirector.example}\n"
                         "    action: strip\n")
    hop.addon.reload()
    f = grant(hop)
    assert f.response.headers["location"] == "https://registry.example/pypi/simple/pkg/"
    assert [r for r in hop.records() if r["event"] == "redirect"][0]["rule"] == "from-redirector"


def test_upstream_mode_never_takes_the_parent_proxys_credential_for_a_leak(hop):
    hop.rules.write_text("rules:\n  - name: careful\n    match: {host: '*'}\n    action: inject\n"
                         "    allow_plaintext: true\n    on_leak: strip\n")
    hop.addon.reload()
    parent = "Basic cGFyZW50OnBhcmVudC1wdw=="

    def upstream_flow(url, resp=False):
        f = tflow.tflow(resp=resp)
        f.client_conn.proxy_mode = mode_specs.ProxyMode.parse("upstream:http://parent.example:3128")
        f.client_conn.peername = CLIENT
        f.request.url = url
        f.request.headers["Proxy-Authorization"] = parent
        return f

    r = upstream_flow("http://redirector.example/simple/pkg/", resp=True)
    r.response.status_code = 302
    r.response.headers["location"] = f"http://aws:{ENCODED}@registry.example/pypi/simple/pkg/"
    hop.responseheaders(r)
    hop.response(r)
    f = upstream_flow("http://registry.example/pypi/simple/pkg/")
    hop.requestheaders(f)
    assert f.request.headers["proxy-authorization"] == parent  # not stripped as a leak
    assert f.request.headers["authorization"] == basic("aws", TOKEN)
    records = hop.records()
    assert not [x for x in records if x["event"] == "leak"]
    assert all(s["header"] != "proxy-authorization" for x in records for s in x.get("sent") or [])
    # inside an https tunnel the header would reach the server: watched as in every other mode
    tunnelled = upstream_flow("https://redirector.example/simple/other/", resp=True)
    tunnelled.response.status_code = 302
    tunnelled.response.headers["location"] = "https://registry.example/other/"
    hop.responseheaders(tunnelled)
    assert [s["header"] for s in hop.records()[-1]["sent"]] == ["proxy-authorization"]


def test_exposure_warnings():
    L = exposure.Listener
    assert exposure.warnings([L("regular", "127.0.0.1", 8080), L("regular", "::1", 8080),
                              L("regular", "localhost", 1), L("wireguard", "", 51820), L("local", "", None)],
                             proxyauth=False) == []
    lines = exposure.warnings([L("regular", "", 8080), L("transparent", "10.0.0.1", 8081),
                               L("upstream", "0.0.0.0", 8082)], proxyauth=False)
    assert len(lines) == 3 and all("without proxy authentication" in line for line in lines)
    assert "*:8080" in lines[0] and "firewall" in lines[1]
    # proxyauth covers the modes it works in; transparent mode cannot ask clients to authenticate
    lines = exposure.warnings([L("regular", "", 8080), L("transparent", "", 8081)], proxyauth=True)
    assert len(lines) == 1 and lines[0].startswith("credhop: transparent proxy")


def test_running_warns_once_per_open_listener(hop, caplog):
    with caplog.at_level(logging.WARNING, logger="credhop"):
        hop.tctx.options.update(mode=["regular@127.0.0.1:8080", "transparent@0.0.0.0:8081"], listen_host="")
        hop.addon.running()
        hop.addon._watcher = None
    lines = [r.getMessage() for r in caplog.records if "beyond loopback" in r.getMessage()]
    assert lines == [lines[0]] and "transparent proxy listening on 0.0.0.0:8081" in lines[0]


def test_http2_authority_is_the_name_on_http2(hop):
    use_table(hop)
    grant(hop)
    f = transparent(INDEX, "/pypi/simple/pkg/", None, "registry.example")
    f.request.http_version = "HTTP/2.0"
    f.request.authority = "registry.example"
    f.request.headers.pop("host", None)
    hop.requestheaders(f)
    assert f.request.headers["authorization"] == basic("aws", TOKEN)
    forged = transparent(EVIL, "/pypi/simple/pkg/", None, "registry.example")
    forged.request.http_version = "HTTP/2.0"
    forged.request.authority = "registry.example"
    forged.request.headers.pop("host", None)
    hop.requestheaders(forged)
    assert "authorization" not in forged.request.headers
