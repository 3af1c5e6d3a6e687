"""Security round 3 (issue 25): proxy-user identity and metrics, through real mitmdump.

proxyauth identity (`credhop_client_id=proxyauth`, mitmproxy `--proxyauth @htpasswd`), what must hold:
a grant is bound to the user mitmproxy authenticated, and only that user; a request can never be
taken for another user by what else it carries (a second Proxy-Authorization, a header inside a
CONNECT tunnel); no combination crashes a flow (no 5xx).

Metrics (`credhop_metrics`), what must hold: label values come only from fixed sets and the rules
file, so the series count does not grow with hosts or user names a network sends; no secret in any
spelling; the page is valid Prometheus exposition format (prometheus_client's parser and promtool).
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.e2e.harness import Mitmdump, free_port, tool
from tests.fixtures.nginx import htpasswd_line
from tests.fixtures.pki import make_pki
from tests.fixtures.server import Request, Response, Server, redirect
from tests.secrets_check import Secret, assert_no_leak, secret_forms

ALICE_TOKEN, BOB_TOKEN = Secret("alice-Rk3vN8qW2xP7"), Secret("bob-Yt6mB1sL9cF4")
USERS = {"alice": "alice-proxy-pw", "bob": "bob-proxy-pw"}


def proxy_basic(user: str, password: str | None = None) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password or USERS[user]}".encode()).decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Net:
    proxy: Mitmdump
    redirector: Server  # plain http, 127.0.0.1: answers from `routes`
    index: Server  # plain http, 127.0.0.1 as "localhost": records, 200
    tls_index: Server  # https, 127.0.0.2: records, 200
    routes: dict[str, Response]
    ca: Path  # mitmproxy's CA, for the client side of a tunnel

    def get(self, url: str, auth: list[str]) -> int:
        """One plain-http GET through the proxy with these Proxy-Authorization fields; its status."""
        host = url.split("/")[2]
        lines = [f"GET {url} HTTP/1.1", f"Host: {host}", *(f"Proxy-Authorization: {a}" for a in auth),
                 "Connection: close", "", ""]
        with socket.create_connection(("127.0.0.1", self.proxy.port), timeout=20) as s:
            s.sendall("\r\n".join(lines).encode())
            answer = b"".join(iter(lambda: s.recv(65536), b""))
        return int(answer.split(b" ", 2)[1])

    def tunnel_get(self, connect_auth: str, path: str, inner_auth: list[str] = ()) -> int:
        """CONNECT to the https index authenticated with `connect_auth`, then one GET inside it."""
        target = f"127.0.0.2:{self.tls_index.port}"
        s = socket.create_connection(("127.0.0.1", self.proxy.port), timeout=20)
        try:
            s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {connect_auth}\r\n\r\n"
                      .encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(1)
            if b" 200 " not in head.split(b"\r\n")[0]:
                return int(head.split(b" ", 2)[1])
            tls = ssl.create_default_context(cafile=str(self.ca)).wrap_socket(s, server_hostname="127.0.0.2")
            lines = [f"GET {path} HTTP/1.1", f"Host: {target}", *(f"Proxy-Authorization: {a}" for a in inner_auth),
                     "Connection: close", "", ""]
            tls.sendall("\r\n".join(lines).encode())
            answer = b"".join(iter(lambda: tls.recv(65536), b""))
            return int(answer.split(b" ", 2)[1])
        finally:
            s.close()

    def authorization_at(self, server: Server, path: str) -> list[str | None]:
        return [r.first_header("authorization") for r in server.requests if r.path == path]


def _ok(_: Request) -> Response:
    return Response(200, [("Content-Type", "text/plain")], b"ok\n")


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> Iterator[Net]:
    work = tmp_path_factory.mktemp("identity")
    pki = make_pki(work / "pki")
    users = work / "htpasswd"
    users.write_text("".join(htpasswd_line(u, p) for u, p in USERS.items()))
    routes: dict[str, Response] = {}
    redirector = Server(lambda r: routes.get(r.path, Response(404, [], b"")), host="127.0.0.1").start()
    index = Server(_ok, host="127.0.0.1").start()
    tls_index = Server(_ok, host="127.0.0.2", tls=pki.server_context()).start()
    try:
        with Mitmdump(work / "proxy", pki.ca_cert, options={"credhop_client_id": "proxyauth",
                                                              "proxyauth": f"@{users}"}) as proxy:
            yield Net(proxy, redirector, index, tls_index, routes, proxy.ca_cert)
    finally:
        for server in (redirector, index, tls_index):
            server.stop()


def grant_to(net: Net, user: str, path: str, location: str) -> None:
    net.routes[path] = redirect(location)
    assert net.get(f"{net.redirector.url}{path}", [proxy_basic(user)]) == 302


def test_two_users_from_one_address_never_share_a_grant(net):
    """alice and bob both come from 127.0.0.1: the grant alice got is hers alone."""
    target = f"http://localhost:{net.index.port}/same-address/pkg/"
    grant_to(net, "alice", "/same-address", f"http://aws:{ALICE_TOKEN}@localhost:{net.index.port}/same-address/pkg/")
    assert net.get(target, [proxy_basic("bob")]) == 200
    assert net.get(target, [proxy_basic("alice")]) == 200
    assert net.authorization_at(net.index, "/same-address/pkg/") == [None, basic("aws", ALICE_TOKEN)]


@pytest.mark.parametrize("order", ["bob first", "alice first"])
def test_a_second_proxy_authorization_never_makes_a_request_another_user(net, order):
    """bob authenticates, and also sends a Proxy-Authorization naming alice (with a wrong password):
    the request is bob's or refused, never alice's; and never a 5xx."""
    path = f"/second-header/{order.split()[0]}/pkg/"
    grant_to(net, "alice", f"/second-{order.split()[0]}",
             f"http://aws:{ALICE_TOKEN}@localhost:{net.index.port}{path}")
    fields = [proxy_basic("bob"), proxy_basic("alice", "guessed")]
    status = net.get(f"http://localhost:{net.index.port}{path}", fields if order == "bob first" else fields[::-1])
    assert status in (200, 407), status
    assert basic("aws", ALICE_TOKEN) not in net.authorization_at(net.index, path)
    assert net.get(f"http://localhost:{net.index.port}{path}", [proxy_basic("alice")]) == 200  # hers works


def test_a_tunnel_is_its_connect_users_whatever_its_requests_say(net):
    """A CONNECT authenticated as alice; inside it, requests carry bob's valid Proxy-Authorization.
    They are alice's: bob's grant for that origin never reaches alice's tunnel."""
    grant_to(net, "bob", "/tunnel", f"https://aws:{BOB_TOKEN}@127.0.0.2:{net.tls_index.port}/tunnel/pkg/")
    assert net.tunnel_get(proxy_basic("alice"), "/tunnel/pkg/", [proxy_basic("bob")]) == 200
    assert net.tunnel_get(proxy_basic("alice"), "/tunnel/pkg/") == 200
    assert net.tunnel_get(proxy_basic("bob"), "/tunnel/pkg/") == 200  # bob's own tunnel gets his grant
    assert net.authorization_at(net.tls_index, "/tunnel/pkg/") == [None, None, basic("aws", BOB_TOKEN)]


def test_an_unauthenticated_tunnel_gets_407_and_nothing_else(net):
    assert net.tunnel_get(proxy_basic("bob", "wrong"), "/tunnel/pkg/") == 407


def test_the_identity_proxy_survived(net):
    assert net.proxy.proc is not None and net.proxy.proc.poll() is None
    assert "Traceback" not in net.proxy.output and "internal error" not in net.proxy.output
    assert_no_leak(net.proxy.output + net.proxy.hoplog.read_text(),
                   secret_forms(ALICE_TOKEN, BOB_TOKEN) | {USERS["alice"], USERS["bob"]}, "proxy output, hop log")


# -- metrics ----------------------------------------------------------------------------------------------

HOSTILE_USERS = ["ghp_" + "A1b2C3d4" * 4 + "Zz9y", "glpat-" + "x7Y8z9" * 3 + "ab", "AKIA" + "Q7W3E5R1T9Y2U4I6",
                 "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ", "us\r\ner", 'q"u\'o\\te',
                 "br{a}ce=x,y", "line\nbreak"]
METRIC_TOKEN = Secret("metrics-Jh5gF3dS1aQ9")


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def series(text: str) -> set[str]:
    return {line.split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_metrics_stay_bounded_secret_free_and_valid_under_thousands_of_hosts_and_users(tmp_path):
    pki = make_pki(tmp_path / "pki")
    n = {"count": 0}

    def hostile_redirect(request: Request) -> Response:
        # every redirect a new host and a new user; some users shaped like tokens, some full of
        # the characters exposition format must escape
        number = int(request.path.rsplit("/", 1)[1])
        n["count"] += 1
        user = HOSTILE_USERS[number % len(HOSTILE_USERS)] + (str(number) if number % 3 else "")
        host = f"h{number}.invalid" if number % 2 else f"127.0.{number // 250 % 250}.{number % 250 + 1}"
        return redirect(f"https://{quote(user, safe='')}:{METRIC_TOKEN}{number}@{host}/simple/{number}/")

    redirector = Server(hostile_redirect, host="127.0.0.1").start()
    port = free_port()
    try:
        with Mitmdump(tmp_path / "proxy", pki.ca_cert, options={"credhop_metrics": f"127.0.0.1:{port}"}) as proxy:
            def burst(first: int, last: int) -> None:
                with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as s:
                    for number in range(first, last):  # one kept-alive connection: thousands in seconds
                        s.sendall(f"GET {redirector.url}/r/{number} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
                        answer = b""
                        while b"\r\n\r\n" not in answer:
                            answer += s.recv(65536)
                        assert b" 302 " in answer.split(b"\r\n")[0] or b" 403 " in answer.split(b"\r\n")[0]

            burst(0, 100)
            few = scrape(port)
            burst(100, 3000)
            many = scrape(port)
        promtool = tool("CREDHOP_PROMTOOL", "promtool")
    finally:
        redirector.stop()
    assert n["count"] == 3000
    # the redirects were counted (else there is nothing to bound): a sample grows with them
    assert "credhop_redirects_total" in many and many != few
    # 30 times the redirects, hosts and users: the same series, give or take a label value of a fixed set
    # (a verdict, a finding code, a latency bucket) first seen later
    assert len(series(many)) <= len(series(few)) + 10, sorted(series(many) - series(few))[:20]
    for number in (7, 1234, 2999):
        assert f"h{number}.invalid" not in many
    forms = secret_forms(*(f"{METRIC_TOKEN}{i}" for i in range(0, 3000, 7)), *HOSTILE_USERS[:4])
    assert_no_leak(many, forms, "/metrics")
    from prometheus_client.parser import text_string_to_metric_families

    families = list(text_string_to_metric_families(many))
    assert {f.name for f in families} >= {"credhop_redirects", "credhop_actions"}
    values = {v for f in families for sample in f.samples for v in sample.labels.values()}
    assert not [v for v in values if ".invalid" in v or "127.0." in v or any(u[:5] in v for u in HOSTILE_USERS)]
    checked = subprocess.run([promtool, "check", "metrics"], input=many, capture_output=True, text=True, timeout=60)
    # promtool names lint problems (a counter without _total, say) on stdout and exits 3 for them; a
    # page it cannot parse is exit 1 with "error while linting"
    assert checked.returncode in (0, 3) and "error while linting" not in checked.stdout + checked.stderr, (
        checked.stdout[-2000:] + checked.stderr[-2000:])
    json.dumps(many)  # plain text, nothing undecodable
