"""The fleet bench's origins: a lean asyncio HTTP/1.1 server (the fixtures' threaded servers cannot keep
up with thousands of clients on two cores), one process, several listeners:

  redirector  127.0.0.1  GET /c/<client>/<kind>/simple/<pkg>/  302 to the registry of that kind, with
                         `aws:<the client's token>@` as the Location's userinfo
  registries  127.0.0.2 (ok), 127.0.0.3 (denied), 127.0.0.4 (missing): GET /c/<client>/simple/<pkg>/ and
              /c/<client>/files/<file>; each request's Authorization is judged against the token of
              *that client's* redirect: `ok`, `missing` (none) or `wrong` (anything else; `other` when
              it is another client's), said back in X-Bench-Verdict and counted
  stats       127.0.0.1  GET /stats  the counters as JSON, per proxy instance (X-Bench-Instance, which
              each instance adds to the requests it forwards)

The ok registry serves a page listing `pkg-<n>` files, then the files, only with the right credential
(401 otherwise); the denied one answers 401 to everything (it accepts no token any more); the missing
one 404 (no such package, whatever the credential). Tokens come from population.token and the seed in
CREDHOP_FLEET_SEED; nothing here prints them. Prints one JSON line with the ports, runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import defaultdict
from urllib.parse import quote

from scripts.bench.backend import Handler
from scripts.fleet.population import USER, basic, token

REGISTRY_HOSTS = {"ok": "127.0.0.2", "denied": "127.0.0.3", "missing": "127.0.0.4"}
COUNTERS = ("requests", "redirects", "follow_ups", "crossed", "registry", "ok", "missing", "wrong", "other",
            "proxy_authorization", "unknown")


class Counts:
    """What the origins saw, per proxy instance; `crossed`: a follow-up that came through another
    instance than its client's 3xx (what only a shared store can inject)."""

    def __init__(self, seed: str, clients: int) -> None:
        self.seed = seed
        self.by_instance: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
        self.redirected_by: dict[str, str] = {}
        self.expected: dict[str, str] = {}
        # every client's Authorization, to tell "another client's credential" from garbage
        self.owner = {basic(seed, f"c{n}"): f"c{n}" for n in range(clients)}

    def authorization(self, client: str) -> str:
        value = self.expected.get(client)
        if value is None:
            value = self.expected[client] = basic(self.seed, client)
        return value


def _headers(head: bytes) -> tuple[str, str, dict[bytes, bytes]]:
    line, _, rest = head.partition(b"\r\n")
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers = {}
    for raw in rest.split(b"\r\n"):
        name, _, value = raw.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return method, target, headers


def _response(status: str, body: bytes, extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
            .encode() + body)


class Origin(Handler):
    """The bench's protocol handler (HTTP/1.1 heads, keep-alive, answers by Content-Length), with this
    backend's answers."""

    def __init__(self, backend: Backend, role: str) -> None:
        super().__init__(backend, "http", role)  # type: ignore[arg-type]

    def answer(self, head: bytes) -> bytes:
        try:
            return self.server.answer(self.role, *_headers(head))  # type: ignore[attr-defined]
        except (ValueError, IndexError):
            return _response("400 Bad Request", b"bad request\n")


class Backend:
    def __init__(self, seed: str, clients: int, file_bytes: int) -> None:
        self.counts = Counts(seed, clients)
        self.file = b"w" * file_bytes
        self.ports: dict[str, int] = {}

    def answer(self, role: str, method: str, target: str, headers: dict[bytes, bytes]) -> bytes:
        if role == "stats":
            body = json.dumps(self.counts.by_instance).encode()
            return _response("200 OK", body)
        instance = headers.get(b"x-bench-instance", b"-").decode("latin-1")
        mine = self.counts.by_instance[instance]
        mine["requests"] += 1
        mine["proxy_authorization"] += b"proxy-authorization" in headers  # a proxy user's password, forwarded
        parts = target.split("?", 1)[0].split("/")  # '', 'c', client, ...
        if len(parts) < 4 or parts[1] != "c":
            mine["unknown"] += 1
            return _response("404 Not Found", b"not found\n")
        client = parts[2]
        if role == "redirector":
            return self.redirect(mine, instance, client, parts[3:])
        return self.registry(mine, instance, role, client, parts[3:], headers.get(b"authorization"))

    def redirect(self, mine: dict[str, int], instance: str, client: str, rest: list[str]) -> bytes:
        kind = rest[0] if rest else ""
        if kind not in REGISTRY_HOSTS or rest[1:2] != ["simple"]:
            mine["unknown"] += 1
            return _response("404 Not Found", b"not found\n")
        mine["redirects"] += 1
        self.counts.redirected_by[client] = instance
        userinfo = f"{USER}:{quote(token(self.counts.seed, client), safe='')}@"
        registry = f"{REGISTRY_HOSTS[kind]}:{self.ports[kind]}"
        location = f"http://{userinfo}{registry}/c/{client}/{'/'.join(rest[1:])}"
        body = f'<html><body>Redirecting to <a href="{location}">{location}</a></body></html>\n'.encode()
        return _response("302 Found", body, f"Location: {location}\r\n")

    def registry(self, mine: dict[str, int], instance: str, kind: str, client: str, rest: list[str],
                 authorization: bytes | None) -> bytes:
        mine["registry"] += 1
        if authorization is None:
            verdict = "missing"
        elif authorization.decode("latin-1") == self.counts.authorization(client):
            verdict = "ok"
        else:
            verdict = "wrong"
            mine["other"] += self.counts.owner.get(authorization.decode("latin-1"), client) != client
        mine[verdict] += 1
        if rest[:1] == ["simple"]:
            mine["follow_ups"] += 1
            mine["crossed"] += self.counts.redirected_by.get(client, instance) != instance
        extra = f"X-Bench-Verdict: {verdict}\r\n"
        if kind == "missing":
            return _response("404 Not Found", b"no such package\n", extra)
        if kind == "denied" or verdict != "ok":
            return _response("401 Unauthorized", b"credentials required\n",
                             extra + 'WWW-Authenticate: Basic realm="fleet-bench"\r\n')
        if rest[:1] == ["simple"] and len(rest) >= 2 and rest[1].startswith("pkg-"):
            count = int(rest[1][4:])
            links = "".join(f'<a href="/c/{client}/files/{rest[1]}-{k}.whl">{rest[1]}-{k}.whl</a><br/>\n'
                            for k in range(count))
            return _response("200 OK", f"<html><body>\n{links}</body></html>\n".encode(), extra)
        if rest[:1] == ["files"]:
            return _response("200 OK", self.file, extra + "Content-Type: application/octet-stream\r\n")
        mine["unknown"] += 1
        return _response("404 Not Found", b"not found\n", extra)

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        listeners = [("redirector", "127.0.0.1"), ("stats", "127.0.0.1"), *REGISTRY_HOSTS.items()]
        for role, host in listeners:
            server = await loop.create_server(lambda r=role: Origin(self, r), host, 0, backlog=1024)
            self.ports[role] = server.sockets[0].getsockname()[1]
        print(json.dumps(self.ports), flush=True)
        stop: asyncio.Future[None] = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        parent = os.getppid()
        while os.getppid() == parent and not stop.done():  # never outlive the bench
            await asyncio.wait([stop], timeout=1.0)


if __name__ == "__main__":
    asyncio.run(Backend(os.environ["CREDHOP_FLEET_SEED"], int(sys.argv[1]), int(sys.argv[2])).serve())
