"""The benchmark's backend: a minimal asyncio HTTP/1.1 server, cheap enough never to be the bottleneck.

Two origins, as in the registry fixture: a redirector on 127.0.0.1 and an index on 127.0.0.2, each over
HTTP and HTTPS (the fixtures' test CA). Paths:
  /plain         200, a small body
  /r/<id>        302 to <index>/f/<id> with userinfo aws:<token> (the token comes from BENCH_TOKEN)
  /n/<id>        302 to <index>/f/<id> without userinfo
  /f/<id>, /dl/<id>  200; header x-authed: 1 when the request carried Authorization
Prints one JSON line with the ports when listening; runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import sys
from urllib.parse import quote

BODY = b"ok " * 100  # 300 bytes
REDIRECT_BODY = '<html><body>Redirecting to <a href="{0}">{0}</a></body></html>\n'


class Handler(asyncio.Protocol):
    def __init__(self, server: "Backend", scheme: str, role: str) -> None:
        self.server, self.scheme, self.role = server, scheme, role
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4:]
            self.transport.write(self.answer(head))  # type: ignore[attr-defined]

    def answer(self, head: bytes) -> bytes:
        line, _, headers = head.partition(b"\r\n")
        path = line.split(b" ", 2)[1].decode("latin-1")
        extra = ""
        if path.startswith(("/r/", "/n/")):
            index = self.server.index[self.scheme]
            userinfo = f"aws:{quote(self.server.token, safe='')}@" if path[1] == "r" else ""
            location = f"{self.scheme}://{userinfo}127.0.0.2:{index}/f/{path[3:]}"
            body = REDIRECT_BODY.format(location).encode()
            status, extra = "302 Found", f"Location: {location}\r\n"
        elif path.startswith(("/f/", "/dl/")):
            authed = b"\nauthorization:" in b"\n" + headers.lower().replace(b"\r\n", b"\n")
            status, body, extra = "200 OK", BODY, f"x-authed: {int(authed)}\r\n"
        elif path == "/plain":
            status, body = "200 OK", BODY
        else:
            status, body = "404 Not Found", b"not found\n"
        return (f"HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
                .encode() + body)


class Backend:
    def __init__(self, token: str, pki_dir: str) -> None:
        self.token = token
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(os.path.join(pki_dir, "leaf.pem"), os.path.join(pki_dir, "leaf-key.pem"))
        self.tls.set_alpn_protocols(["http/1.1"])
        self.index: dict[str, int] = {}
        self.redirector: dict[str, int] = {}

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        for scheme in ("http", "https"):
            for role, host, table in (("redirector", "127.0.0.1", self.redirector), ("index", "127.0.0.2", self.index)):
                server = await loop.create_server(lambda s=scheme, r=role: Handler(self, s, r), host, 0,
                                                  ssl=self.tls if scheme == "https" else None, backlog=256)
                table[scheme] = server.sockets[0].getsockname()[1]
        print(json.dumps({"redirector": self.redirector, "index": self.index}), flush=True)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        parent = os.getppid()
        while not stop.is_set() and os.getppid() == parent:  # never outlive the benchmark
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass


if __name__ == "__main__":
    asyncio.run(Backend(os.environ["BENCH_TOKEN"], sys.argv[1]).serve())
