"""The adversarial redirect corpus (tests/e2e/security_cases.py) through one real mitmdump.

A pool of loopback servers (127.0.0.1-5, 127.0.0.20, ::1, `localhost`; each socket speaks http and,
when the client opens with a TLS handshake, https with the test CA) records every request. For each
case a redirector answers the case's raw Location bytes; a small client follows it through the
proxy the way uv/reqwest do (WHATWG resolution with ada-url, userinfo dropped), then probes every
origin of the pool and re-asks the receivers from another client address. The test asserts exactly
which origin received which credential, what the hop log says, and that no secret shows up in
mitmdump's output or the hop log.

Every case runs from its own client address (127.0.1.N, the second client 127.0.2.N) with its own
secrets, so grants and chains of one case cannot touch another. Names that do not resolve
(`sub.localhost` ...) are answered by mitmdump's block_list after credhop's requestheaders hook, so
no DNS query leaves the machine; there the hop log's inject events are the witness.
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import ada_url
import pytest

from tests.e2e.harness import Mitmdump
from tests.e2e.security_cases import CASES, POOL, Case, case_path, expand, wire
from tests.fixtures.pki import make_pki
from tests.secrets_check import Secret, assert_no_leak, secret_forms

REDIRECTS = (301, 302, 303, 307, 308)
SECRET_HEADERS = ("authorization", "proxy-authorization", "cookie", "x-api-key")
MAX_HEAD = 1 << 20  # a 64 KiB Location or Authorization must still be read and recorded
TIMEOUT = 15.0

RULES = """\
rules:
  - name: block
    match: {path_prefix: /c/block-}
    action: block
  - name: strip
    match: {path_prefix: /c/strip-}
    action: strip
  - name: leak
    match: {path_prefix: /c/leak-}
    action: inject
    on_leak: strip
  - name: loopback
    action: inject
"""
# Only loopback addresses and `localhost` reach a socket; every other name is answered by mitmdump
# itself (after credhop's requestheaders hook), so no DNS query leaves the machine.
BLOCK_UNRESOLVABLE = r'#!~d "^(127\.[0-9.]+|localhost|::1|::ffff:[0-9a-f:.]+)$"#418'


# -- servers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One request a server received."""

    endpoint: str
    scheme: str
    target: str
    headers: tuple[tuple[str, str], ...]  # (lower-case name, value as latin-1)

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    @property
    def host(self) -> str:
        return next(iter(self.values("host")), "")

    def __repr__(self) -> str:  # secrets never appear in a failure message
        shown = [(k, "<redacted>" if k in SECRET_HEADERS else v) for k, v in self.headers]
        return f"Hit({self.endpoint} {self.scheme} {self.target!r} {shown})"


@dataclass
class Routes:
    """Scripted answers: (endpoint, path) -> raw response bytes. Anything else gets 200."""

    answers: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def redirect(self, endpoint: str, path: str, status: int, locations: Sequence[bytes]) -> None:
        head = b"HTTP/1.1 %d Redirect\r\n" % status
        head += b"".join(b"Location: " + location + b"\r\n" for location in locations)
        self.answers[(endpoint, path)] = head + b"Content-Length: 0\r\nConnection: close\r\n\r\n"

    def answer(self, endpoint: str, path: str) -> bytes:
        return self.answers.get(
            (endpoint, path), b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
        )


class Endpoint:
    """A loopback socket answering one HTTP/1.1 request per connection, in TLS if the client starts one."""

    def __init__(self, name: str, host: str, port: int, tls: ssl.SSLContext, routes: Routes) -> None:
        self.name, self.host, self.tls, self.routes = name, host, tls, routes
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.sock.listen(64)
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name=f"endpoint-{name}", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(TIMEOUT)
            scheme = "http"
            if conn.recv(1, socket.MSG_PEEK) == b"\x16":
                conn = self.tls.wrap_socket(conn, server_side=True)
                scheme = "https"
            head = _read_head(conn)
            if head is None:
                return
            request_line, headers = _parse_head(head)
            target = request_line.split(b" ")[1].decode("latin-1")
            with self._lock:
                self.hits.append(Hit(self.name, scheme, target, headers))
            conn.sendall(self.routes.answer(self.name, target.split("?", 1)[0]))
        except (OSError, ValueError, IndexError):
            pass  # a client that hung up, a failed handshake: nothing to record
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


def _read_head(conn: socket.socket, sink: bytearray | None = None) -> bytes | None:
    buf = sink if sink is not None else bytearray()
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
        if len(buf) > MAX_HEAD:
            raise ValueError("head too large")
    end = buf.index(b"\r\n\r\n")
    head = bytes(buf[:end])
    del buf[: end + 4]
    return head


def _parse_head(head: bytes) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    first, *lines = head.split(b"\r\n")
    headers = []
    for line in lines:
        name, _, value = line.partition(b":")
        headers.append((name.strip().decode("latin-1").lower(), value.strip().decode("latin-1")))
    return first, tuple(headers)


# -- the client ----------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]  # latin-1, so raw bytes survive

    def raw(self, name: str) -> list[bytes]:
        return [v.encode("latin-1") for k, v in self.headers if k == name]


@dataclass
class Client:
    """Sends one request per connection through the proxy, from a given loopback address."""

    proxy_port: int
    source: str
    mitm_ca: Path
    log: list[str] = field(default_factory=list)  # what happened, for failure messages (no secrets)

    def get(
        self, url: str, headers: Sequence[tuple[str, str]] = (), host_header: str | None = None
    ) -> Reply | None:
        parsed = ada_url.URL(url)
        scheme, host, port = (
            parsed.protocol[:-1],
            parsed.hostname,
            int(parsed.port or {"http": 80, "https": 443}[parsed.protocol[:-1]]),
        )
        authority = f"{host}:{port}"
        path = (parsed.pathname or "/") + parsed.search
        lines = [f"Host: {host_header or authority}", *(f"{k}: {v}" for k, v in headers), "Connection: close"]
        sock = socket.create_connection(
            ("127.0.0.1", self.proxy_port), timeout=TIMEOUT, source_address=(self.source, 0)
        )
        try:
            if scheme == "https":
                sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
                answer = _read_head(sock, bytearray())
                if answer is None or b" 200" not in answer.split(b"\r\n", 1)[0]:
                    self.log.append(
                        f"CONNECT {authority}: {answer[:60]!r}" if answer else f"CONNECT {authority}: closed"
                    )
                    return None
                context = ssl.create_default_context(cafile=str(self.mitm_ca))
                sock = context.wrap_socket(sock, server_hostname=host.strip("[]"))
                request_target = path
            else:
                request_target = f"http://{authority}{path}"
            request = f"GET {request_target} HTTP/1.1\r\n" + "".join(f"{line}\r\n" for line in lines) + "\r\n"
            sock.sendall(request.encode("utf-8", "surrogateescape"))
            response = _read_head(sock)
        except (OSError, ValueError) as e:
            self.log.append(f"GET {scheme}://{authority}{path}: {type(e).__name__}")
            return None
        finally:
            sock.close()
        if response is None:
            self.log.append(f"GET {scheme}://{authority}{path}: no response")
            return None
        status_line, response_headers = _parse_head(response)
        reply = Reply(int(status_line.split(b" ")[1]), response_headers)
        self.log.append(f"GET {scheme}://{authority}{path} -> {reply.status}")
        return reply

    def follow(self, url: str, headers: Sequence[tuple[str, str]] = (), resend: bool = False) -> list[Reply]:
        """GET `url` and follow redirects like uv before 0.7.16: WHATWG resolution, userinfo dropped.
        `headers` go with the first request, and with every follow-up if `resend`."""
        replies: list[Reply] = []
        for hop in range(10):
            reply = self.get(url, headers if hop == 0 or resend else ())
            if reply is None:
                break
            replies.append(reply)
            locations = reply.raw("location")
            if reply.status not in REDIRECTS or not locations:
                break
            try:  # reqwest: a Location that is not UTF-8 is not followed
                target = ada_url.URL(locations[0].decode("utf-8"), url)
            except (UnicodeDecodeError, ValueError):
                self.log.append("Location not followed: unparseable")
                break
            if target.protocol not in ("http:", "https:"):
                self.log.append(f"Location not followed: scheme {target.protocol}")
                break
            target.username = ""
            target.password = ""
            target.hash = ""
            url = target.href
        return replies


# -- the pool and mitmdump ---------------------------------------------------------------------------


@dataclass
class Pool:
    endpoints: dict[str, Endpoint]
    ports: dict[str, int]
    routes: Routes
    proxy: Mitmdump

    def url(self, key: str, path: str) -> str:
        origin = POOL[key]
        host = f"[{origin.host}]" if ":" in origin.host else origin.host
        return f"{origin.scheme}://{host}:{self.ports[origin.port]}{path}"

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.proxy.hoplog.read_text().splitlines() if line]


ENDPOINTS = {  # endpoint -> (address, port name)
    "A": ("127.0.0.1", "pa"),
    "B": ("127.0.0.2", "pb"),
    "B2": ("127.0.0.2", "pb2"),
    "C": ("127.0.0.3", "pb"),
    "F": ("127.0.0.20", "pb"),
    "D": ("127.0.0.4", "pd"),
    "E": ("127.0.0.5", "pe"),
    "L": ("127.0.0.1", "pl"),
    "V6": ("::1", "p6"),
}


def _bind_all(tls: ssl.SSLContext, routes: Routes) -> tuple[dict[str, Endpoint], dict[str, int]]:
    """Free ports for every port name; `pb` must be free on 127.0.0.2, .3 and .20 at once."""
    for _ in range(50):
        endpoints: dict[str, Endpoint] = {}
        ports: dict[str, int] = {}
        try:
            for name, (host, port_name) in ENDPOINTS.items():
                endpoint = Endpoint(name, host, ports.get(port_name, 0), tls, routes)
                endpoints[name] = endpoint
                ports[port_name] = endpoint.port
            return endpoints, ports
        except OSError:
            for endpoint in endpoints.values():
                endpoint.close()
    raise RuntimeError("no common free port on 127.0.0.2, 127.0.0.3 and 127.0.0.20")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    workdir = tmp_path_factory.mktemp("security-corpus")
    pki = make_pki(
        workdir / "pki",
        ("localhost", "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.20", "::1"),
    )
    routes = Routes()
    endpoints, ports = _bind_all(pki.server_context(), routes)
    rules = workdir / "rules.yaml"
    rules.write_text(RULES)
    proxy = Mitmdump(workdir / "proxy", pki.ca_cert, rules=rules, options={"block_list": BLOCK_UNRESOLVABLE})
    try:
        with proxy:
            yield Pool(endpoints, ports, routes, proxy)
    finally:
        for endpoint in endpoints.values():
            endpoint.close()


# -- one case ----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    case: Case
    client: str  # the case's client address
    other: str  # a second client, which must never get the case's credentials
    tokens: dict[str, Secret]
    replies: list[Reply]
    hits: list[Hit]  # everything any server received while the case ran
    records: list[dict[str, Any]]  # the hop log lines of both clients
    log: list[str]
    output: str  # what mitmdump printed while the case ran
    seconds: float


def authority(pool: Pool, key: str) -> str:
    origin = POOL[key]
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    return f"{host}:{pool.ports[origin.port]}"


def origin_of_hit(pool: Pool, hit: Hit) -> str:
    """The pool origin a request reached: by socket and scheme, and by Host where a socket serves several."""
    candidates = [k for k, o in POOL.items() if o.endpoint == hit.endpoint and o.scheme == hit.scheme]
    if len(candidates) == 1:
        return candidates[0]
    return next(
        (k for k in candidates if authority(pool, k) == hit.host), f"{hit.endpoint}/{hit.scheme}/{hit.host}"
    )


def origin_of_url(pool: Pool, url: str) -> str:
    """The pool origin of a hop-log URL (mitmproxy writes IPv6 hosts without brackets: http://::1:8080/)."""
    scheme, _, rest = url.partition("://")
    hostport = rest.split("/", 1)[0]
    if hostport.startswith("["):
        host, _, port = hostport[1:].partition("]:")
    else:
        host, _, port = hostport.rpartition(":")
    for key, origin in POOL.items():
        if (origin.scheme, origin.host, str(pool.ports[origin.port])) == (scheme, host, port):
            return key
    return url


def run_case(pool: Pool, case: Case, index: int) -> Outcome:
    tokens = {name: Secret(f"tk:{secrets.token_urlsafe(9)}@/%x") for name in ("tok", "tok2")}
    prefix = case_path(case)

    def text(template: str) -> str:
        return expand(template, case, pool.ports, tokens)

    start = POOL[case.start]
    assert start.endpoint is not None
    pool.routes.redirect(
        start.endpoint, f"{prefix}/start", case.status, [wire(text(t)) for t in case.locations]
    )
    for key, below, location in case.hops:
        endpoint = POOL[key].endpoint
        assert endpoint is not None
        pool.routes.redirect(endpoint, prefix + below, 302, [wire(text(location))])

    mark = {name: len(e.hits) for name, e in pool.endpoints.items()}
    printed = len(pool.proxy.output)
    began = time.monotonic()
    client = Client(pool.proxy.port, f"127.0.1.{index + 1}", pool.proxy.ca_cert)
    other = Client(pool.proxy.port, f"127.0.2.{index + 1}", pool.proxy.ca_cert)
    headers = [(name, text(value)) for name, value in case.client_headers]
    replies = client.follow(pool.url(case.start, f"{prefix}/start"), headers, resend=case.resend)
    if case.forge:
        to, host_of = case.forge
        client.get(pool.url(to, f"{prefix}/forged"), host_header=authority(pool, host_of))
    with ThreadPoolExecutor(8) as executor:
        list(executor.map(lambda key: client.get(pool.url(key, f"{prefix}/probe")), POOL))
        list(executor.map(lambda key: other.get(pool.url(key, f"{prefix}/other")), case.receivers))
    hits = [h for name, e in pool.endpoints.items() for h in list(e.hits)[mark[name] :]]
    records = [r for r in pool.records() if r.get("client") in (client.source, other.source)]
    return Outcome(
        case,
        client.source,
        other.source,
        tokens,
        replies,
        hits,
        records,
        client.log + other.log,
        pool.proxy.output[printed:],
        time.monotonic() - began,
    )


def _basic_credential(value: str) -> str | None:
    scheme, _, param = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(param).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def fail(message: str) -> None:
    """Fail with `message` only: pytest's assertion rewriting would print the header values (secrets)."""
    __tracebackhide__ = True
    pytest.fail(message, pytrace=False)


def check(pool: Pool, outcome: Outcome) -> None:
    case, prefix = outcome.case, case_path(outcome.case)
    receivers = case.receivers
    where = f"[{case.id}] client log: {outcome.log}"

    # 1. servers: the credential reached exactly the receivers; nothing secret reached anyone else
    reached: dict[str, int] = {}
    for hit in outcome.hits:
        if hit.target == f"{prefix}/start":
            continue  # before any redirect; the client's own headers go there
        key = case.forge[0] if case.forge and hit.target == f"{prefix}/forged" else origin_of_hit(pool, hit)
        reached[key] = reached.get(key, 0) + 1
        sent = [name for name in SECRET_HEADERS if hit.values(name)]
        if key in receivers and hit.target != f"{prefix}/other":
            values = hit.values("authorization")
            credential = _basic_credential(values[0]) if len(values) == 1 else None
            if (
                sent != ["authorization"]
                or credential is None
                or outcome.tokens[receivers[key]] not in credential
            ):
                fail(f"{key} ({hit.target}) did not get exactly its Basic credential: got {sent} {where}")
        elif sent:
            fail(f"{key} ({hit.target}) got {sent}; only {sorted(receivers)} may get a credential {where}")
    for key in receivers:
        if POOL[key].endpoint is not None and not reached.get(key):
            fail(f"{key} received nothing {where}")

    # 2. the hop log: inject events for the receivers, from the case's client only
    injected = {
        origin_of_url(pool, r["url"])
        for r in outcome.records
        if r["event"] == "inject" and r.get("action") == "inject" and r["client"] == outcome.client
    }
    if injected != set(receivers):
        fail(f"inject events for {sorted(injected)}, expected {sorted(receivers)} {where}")
    if [r for r in outcome.records if r["event"] == "inject" and r["client"] == outcome.other]:
        fail(f"a second client got the credential {where}")

    # 3. the hop log explains the first redirect
    first = [
        r
        for r in outcome.records
        if r["event"] == "redirect" and r["client"] == outcome.client and r["url"].endswith(f"{prefix}/start")
    ]
    if len(first) != 1:
        fail(f"{len(first)} redirect records for the first hop {where}")
    reason = str(first[0].get("reason") or "")
    if case.reason and (
        case.reason.lower() not in reason.lower() or first[0]["action"] not in ("keep", "none")
    ):
        fail(f"hop log: action {first[0]['action']!r} reason {reason!r}, expected {case.reason!r} {where}")
    if receivers and (first[0]["action"] != "inject" or reason):
        fail(f"hop log: action {first[0]['action']!r} reason {reason!r}, expected inject {where}")
    if case.leak:
        leaks = [
            (r["header"], r["action"])
            for r in outcome.records
            if r["event"] == "leak" and r["client"] == outcome.client
        ]
        if not leaks or set(leaks) != {(case.leak, "strip")}:
            fail(f"leak events {leaks}, expected {case.leak} stripped {where}")

    # 4. what the client was told
    first_reply = outcome.replies[0] if outcome.replies else None
    if case.id.startswith("block-"):
        if first_reply is None or first_reply.status != 403:
            fail(f"blocked redirect answered {first_reply and first_reply.status} {where}")
    elif case.reason and first_reply is not None:  # refused: the Location passes exactly as sent
        sent_locations = [wire(expand(t, case, pool.ports, outcome.tokens)) for t in case.locations]
        if first_reply.raw("location") != sent_locations:
            fail(f"a refused Location was changed {where}")
    elif first_reply is not None and first_reply.raw("location") and not case.public:
        told = first_reply.raw("location")[0].decode("utf-8", "replace")
        try:
            parsed = ada_url.URL(told, pool.url(case.start, "/"))
        except ValueError:
            parsed = None
        if parsed is not None and (parsed.username or parsed.password):
            fail(f"the client still got userinfo in its Location {where}")

    # 5. no hook raised, and no secret in mitmdump's output or the hop log
    if "Addon error" in outcome.output:
        fail(f"a credhop hook raised (see mitmdump's output) {where}")
    if not case.public:
        forms = cast("set[str]", secret_forms(*outcome.tokens.values(), user="aws"))
        assert_no_leak(
            pool.proxy.output + pool.proxy.hoplog.read_text(),
            forms,
            f"mitmdump output or hop log ({case.id})",
        )


def _param(index: int, case: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
    return pytest.param(index, case, id=case.id, marks=marks)


TIMINGS: dict[str, float] = {}


@pytest.mark.parametrize(("index", "case"), [_param(i, c) for i, c in enumerate(CASES)])
def test_corpus_case(pool: Pool, index: int, case: Case) -> None:
    outcome = run_case(pool, case, index)
    TIMINGS[case.id] = outcome.seconds
    check(pool, outcome)


def test_corpus_is_large_and_cited() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)
    assert all(c.ref.strip() for c in CASES)


def test_mitmdump_survived_the_corpus(pool: Pool) -> None:
    assert pool.proxy.proc is not None and pool.proxy.proc.poll() is None
    if TIMINGS:
        print(
            f"\nsecurity corpus: {len(TIMINGS)} cases in {sum(TIMINGS.values()):.1f} s, "
            f"slowest {max(TIMINGS, key=TIMINGS.__getitem__)} {max(TIMINGS.values()):.2f} s"
        )
