"""The load generator: simulated clients installing through the fleet, many at once (bounded), raw
HTTP/1.1 over asyncio with keep-alive connections and the client's own Proxy-Authorization.

One install, as uv does it through an HTTP proxy: the index page from the redirector on one connection
(302, userinfo in the Location), the follow-up to the registry on a second connection (where credhop
injects), then the files the page lists over that connection and a third one, two downloads at a time.
Each connection is a new TCP connection to the balancer, so round-robin spreads one install over the
instances. Like uv before 0.7.16 a client never sends a Location's userinfo itself: a Location that
still has one is a failure. Outcomes and reasons are built from statuses and the backend's verdicts
only, never from a header's value.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from scripts.fleet.population import Client

TIMEOUT = 30.0  # seconds one request may take on a saturated machine before it counts as failed
PARALLEL_DOWNLOADS = 2
HREF = re.compile(rb'href="([^"]+)"')


class ProxyAnswered(Exception):
    """The request got no answer from an origin (the proxy's own 4xx/5xx, or a closed connection)."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def verdict(self) -> str | None:
        return self.headers.get("x-bench-verdict")


class Connection:
    """One keep-alive connection to the proxy, from the client's own source address; reopened (a new
    connection, so maybe another instance) when the proxy closed it."""

    def __init__(self, proxy_port: int, source: str, proxy_authorization: str,
                 latencies: list[float]) -> None:
        self.proxy_port, self.source = proxy_port, source
        self.proxy_authorization = proxy_authorization
        self.latencies = latencies
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, url: str) -> Answer:
        parts = urlsplit(url)
        request = (f"GET {url} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                   f"Proxy-Authorization: {self.proxy_authorization}\r\n"
                   "User-Agent: credhop-fleet-bench\r\nAccept: */*\r\n\r\n").encode()
        start = time.perf_counter()
        answer = await asyncio.wait_for(self._exchange(request), TIMEOUT)
        self.latencies.append(time.perf_counter() - start)
        return answer

    async def _exchange(self, request: bytes) -> Answer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.proxy_port,
                                                                     local_addr=(self.source, 0))
        assert self.reader is not None
        self.writer.write(request)
        status_line = await self.reader.readline()
        if not status_line:
            await self.close()
            raise ProxyAnswered("connection closed before an answer")
        status = int(status_line.split(b" ", 2)[1])
        headers: dict[str, str] = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while size := int((await self.reader.readline()).split(b";")[0], 16):
                chunks.append((await self.reader.readexactly(size + 2))[:-2])
            await self.reader.readline()
            body = b"".join(chunks)
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return Answer(status, headers, body)

    async def close(self) -> None:
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


@dataclass
class Install:
    client: Client
    outcome: str = "unexpected"  # the client's kind when it ended as that kind must, else "unexpected"
    reason: str = ""  # why an unexpected outcome
    requests: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass
class Origins:
    """Where the backend listens (its printed ports)."""
    redirector: int
    registries: dict[str, int]


def _judge(answer: Answer, step: str, expected: int) -> str | None:
    """None when the answer is what this step must get, else the reason (statuses and verdicts only)."""
    if answer.verdict is None:
        return f"{step}: {answer.status} from the proxy, not the registry"
    if answer.verdict != "ok":
        return f"{step}: {answer.status}, registry saw a {answer.verdict} credential"
    if answer.status != expected:
        return f"{step}: {answer.status} instead of {expected}"
    return None


async def install(client: Client, proxy_port: int, origins: Origins, proxy_password: str) -> Install:
    result = Install(client)
    auth = "Basic " + base64.b64encode(f"{client.proxy_user}:{proxy_password}".encode()).decode()
    conns = [Connection(proxy_port, client.source, auth, result.latencies)
             for _ in range(1 + PARALLEL_DOWNLOADS)]
    try:
        result.reason = await _steps(client, conns, origins, result) or ""
        if not result.reason:
            result.outcome = client.kind
    except ProxyAnswered as e:
        result.reason = f"no answer: {e}"
    except asyncio.TimeoutError:
        result.reason = f"a request took more than {TIMEOUT:.0f} s"
    except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as e:
        result.reason = f"connection error: {type(e).__name__}"
    finally:
        result.requests = len(result.latencies)
        for conn in conns:
            await conn.close()
    return result


async def _steps(client: Client, conns: list[Connection], origins: Origins, result: Install) -> str | None:
    page = f"pkg-{client.downloads}"
    index = f"http://127.0.0.1:{origins.redirector}/c/{client.name}/{client.kind}/simple/{page}/"
    answer = await conns[0].get(index)
    if answer.status != 302 or "location" not in answer.headers:
        return f"index: {answer.status} instead of a 302 with a Location"
    location = answer.headers["location"]
    if urlsplit(location).username is not None or "@" in urlsplit(location).netloc:
        return "index: the 302's Location still carried its userinfo"
    await conns[0].close()  # done with the redirector, as a client's pool would idle it
    answer = await conns[1].get(location)
    expected = {"ok": 200, "denied": 401, "missing": 404}[client.kind]
    if reason := _judge(answer, "follow-up", expected):
        return reason
    if client.kind != "ok":
        return None
    base = urlsplit(location)
    files = [f"{base.scheme}://{base.netloc}{href.decode()}" for href in HREF.findall(answer.body)]
    if len(files) != client.downloads:
        return f"follow-up: the page listed {len(files)} files, not {client.downloads}"
    reasons = await asyncio.gather(*(_download(conns[1 + k], files[k::PARALLEL_DOWNLOADS])
                                     for k in range(PARALLEL_DOWNLOADS)))
    return next((r for r in reasons if r), None)


async def _download(conn: Connection, urls: list[str]) -> str | None:
    for url in urls:
        if reason := _judge(await conn.get(url), "download", 200):
            return reason
    return None


async def _drive(clients: list[Client], proxy_port: int, origins: Origins, passwords: dict[str, str],
                 concurrency: int) -> list[Install]:
    queue = iter(clients)
    results: list[Install] = []

    async def worker() -> None:
        for client in queue:  # one iterator shared by every worker: each client installs once
            results.append(await install(client, proxy_port, origins, passwords[client.name]))

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(clients)))))
    return results


def run(clients: list[Client], proxy_port: int, origins: Origins, passwords: dict[str, str],
        concurrency: int) -> tuple[list[Install], float]:
    """Every client installs once, `concurrency` at a time; the installs and the wall time they took."""
    start = time.perf_counter()
    results = asyncio.run(_drive(clients, proxy_port, origins, passwords, concurrency))
    return results, time.perf_counter() - start
