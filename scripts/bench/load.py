"""The benchmark's clients: keep-alive HTTP/1.1 through the proxy (absolute-form for http, CONNECT + TLS
through mitmproxy's CA for https), several threads, each with its own connection to each origin.
A client drops the Location's userinfo when it follows a redirect, like uv before 0.7.16."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

WORKLOADS = {
    "plain": "plain 200s, no redirects",
    "redirect": "302 with userinfo, then its follow-up with injection",
    "download": "one credential hop, then 19 same-origin downloads",
    "noauth": "302 without userinfo, then its follow-up",
}
DOWNLOADS = 19


class Conn:
    def __init__(self, proxy_port: int, scheme: str, host: str, port: int, source: str,
                 ca: str | None) -> None:
        self.scheme, self.authority = scheme, f"{host}:{port}"
        sock = socket.socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((source, 0))  # each workload its own client address: credhop keeps state per client
        sock.connect(("127.0.0.1", proxy_port))
        if scheme == "https":
            sock.sendall(f"CONNECT {self.authority} HTTP/1.1\r\nHost: {self.authority}\r\n\r\n".encode())
            reader = sock.makefile("rb")
            status = reader.readline()
            while reader.readline() not in (b"\r\n", b""):
                pass
            if b" 200" not in status:
                raise RuntimeError(f"CONNECT failed: {status!r}")
            context = ssl.create_default_context(cafile=ca)
            context.set_alpn_protocols(["http/1.1"])
            sock = context.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.reader = sock.makefile("rb")

    def get(self, path: str) -> tuple[int, dict[bytes, bytes]]:
        target = path if self.scheme == "https" else f"http://{self.authority}{path}"
        self.sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {self.authority}\r\nAccept: */*\r\n\r\n".encode())
        status = int(self.reader.readline().split(b" ", 2)[1])
        headers: dict[bytes, bytes] = {}
        chunked = False
        while True:
            line = self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            chunked = True
        if chunked:
            while True:
                size = int(self.reader.readline().split(b";")[0], 16)
                self.reader.read(size + 2)
                if size == 0:
                    break
        else:
            self.reader.read(int(headers.get(b"content-length", b"0")))
        return status, headers

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


@dataclass
class Outcome:
    requests: int = 0
    authed: int = 0  # follow-ups and downloads the index saw with Authorization
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0


def _unit(conns: tuple[Conn, Conn], workload: str, uid: str, out: Outcome) -> None:
    redirector, index = conns
    clock = time.perf_counter
    lat = out.latencies
    if workload == "plain":
        t = clock(); redirector.get("/plain"); lat.append(clock() - t); out.requests += 1
        return
    t = clock()
    status, headers = redirector.get(f"/{'n' if workload == 'noauth' else 'r'}/{uid}")
    lat.append(clock() - t)
    path = urlsplit(headers[b"location"].decode()).path  # the userinfo is dropped: host and path followed
    t = clock(); status, headers = index.get(path); lat.append(clock() - t)
    out.requests += 2
    out.authed += headers.get(b"x-authed") == b"1"
    if workload == "download":
        for k in range(DOWNLOADS):
            t = clock(); status, headers = index.get(f"/dl/{uid}-{k}"); lat.append(clock() - t)
            out.requests += 1
            out.authed += headers.get(b"x-authed") == b"1"


def _worker(conns: list[tuple[Conn, Conn]], workload: str, units: int, tag: str, outs: list[Outcome],
            lock: threading.Lock, start: threading.Barrier) -> None:
    """Unit by unit, each configuration in turn (rotating who goes first), so whatever else the machine
    does at any moment falls on all configurations alike."""
    mine = [Outcome() for _ in conns]
    start.wait()
    k = len(conns)
    for i in range(units):
        for j in range(k):
            c = (i + j) % k
            if mine[c].errors:
                continue
            try:
                _unit(conns[c], workload, f"{tag}-{i}", mine[c])
            except (OSError, ValueError, KeyError, IndexError):
                mine[c].errors += 1
    with lock:
        for out, m in zip(outs, mine):
            out.requests += m.requests
            out.authed += m.authed
            out.errors += m.errors
            out.latencies.extend(m.latencies)


def requests_per_unit(workload: str) -> int:
    return {"plain": 1, "redirect": 2, "noauth": 2, "download": 2 + DOWNLOADS}[workload]


class Run:
    """One workload against several proxies at once, interleaved unit by unit. Connections are opened
    and warmed before the measured part starts (`go`), so the figures hold requests only."""

    def __init__(self, proxy_ports: list[int], scheme: str, ports: dict, source: str, ca: str, workload: str,
                 requests: int, threads: int, tag: str) -> None:
        self.outs = [Outcome() for _ in proxy_ports]
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(threads + 1)
        units = max(1, requests // requests_per_unit(workload) // threads)
        self.conns: list[list[tuple[Conn, Conn]]] = []
        for _ in range(threads):
            per_proxy = []
            for proxy_port in proxy_ports:
                pair = (Conn(proxy_port, scheme, "127.0.0.1", ports["redirector"][scheme], source, ca),
                        Conn(proxy_port, scheme, "127.0.0.2", ports["index"][scheme], source, ca))
                for c in pair:
                    c.get("/plain")  # mitmproxy opens (for https: handshakes) its upstream connection now
                per_proxy.append(pair)
            self.conns.append(per_proxy)
        self.threads = [threading.Thread(target=_worker, args=(per_proxy, workload, units, f"{tag}-{n}", self.outs,
                                                               self.lock, self.barrier), daemon=True)
                        for n, per_proxy in enumerate(self.conns)]
        for t in self.threads:
            t.start()

    def go(self) -> list[Outcome]:
        started = time.perf_counter()
        self.barrier.wait()
        for t in self.threads:
            t.join()
        wall = time.perf_counter() - started
        for out in self.outs:
            out.wall = wall
        for per_proxy in self.conns:
            for pair in per_proxy:
                for c in pair:
                    c.close()
        return self.outs
