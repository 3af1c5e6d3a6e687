"""Loopback servers for the client matrix's npm and git fixtures.

``AuthOrigin`` answers only requests carrying exactly one correct ``Authorization: Basic`` header
(401 or 404 otherwise) and hands the rest to an app (npm registry, ``git http-backend``).
``PathRedirector`` answers every request below a prefix with a redirect to the same path and query
on the auth origin, with the credentials in the Location's userinfo. Both record every request
(method, path, headers, status), in memory only. GET, HEAD and POST are served (git posts).
"""

from __future__ import annotations

import base64
import hmac
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.fixtures.registry import REALM, RecordedRequest, Response, userinfo_url

_SOCKET_TIMEOUT = 30.0


@dataclass
class Request:
    method: str
    target: str  # path and query as sent
    headers: dict[str, list[str]]
    body: bytes = b""

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> str:
        return urlsplit(self.target).query

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass(repr=False)
class Recorded(RecordedRequest):
    """A RecordedRequest (secret headers never shown in repr) plus the status it was answered with."""

    status: int = 0


App = Callable[[Request], Response]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], owner: RecordingServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def server_bind(self) -> None:  # no reverse DNS lookup (socket.getfqdn) on loopback
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def finish_request(self, request: socket.socket, client_address: object) -> None:
        request.settimeout(_SOCKET_TIMEOUT)
        tls = self.owner.tls
        conn = tls.wrap_socket(request, server_side=True) if tls is not None else request
        try:
            super().finish_request(conn, client_address)
        finally:
            if conn is not request:
                conn.close()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # hang-ups and refused TLS handshakes are part of the matrix


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "credhop-matrix"
    timeout = _SOCKET_TIMEOUT
    disable_nagle_algorithm = True
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        request = Request(self.command, self.path, headers, self._body())
        owner = self.server.owner
        try:
            response = owner.respond(request)
        except Exception as exc:  # a broken fixture must show, not hang the client
            response = Response(
                500, [("Content-Type", "text/plain")], f"fixture error: {type(exc).__name__}\n".encode()
            )
        owner.record(Recorded(self.command, self.path, headers, status=response.status))
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = _handle

    def _not_allowed(self) -> None:
        self._body()
        self.server.owner.record(Recorded(self.command, self.path, {}, status=405))
        self.send_response(405)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed


class RecordingServer:
    def __init__(self, host: str, tls: ssl.SSLContext | None) -> None:
        self.host = host
        self.tls = tls
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    origin = url

    def record(self, request: Recorded) -> None:
        with self._lock:
            self.requests.append(request)

    def respond(self, request: Request) -> Response:
        raise NotImplementedError

    def start(self):
        self._httpd = _Server((self.host, 0), self)
        self.port = self._httpd.server_port
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()


class AuthOrigin(RecordingServer):
    """Serves ``app`` only to requests with exactly one correct Basic Authorization header."""

    def __init__(
        self,
        user: str,
        password: str,
        app: App,
        unauth_status: int = 401,
        host: str = "127.0.0.2",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(host, tls)
        if unauth_status not in (401, 404):
            raise ValueError("unauth_status must be 401 or 404")
        self.user = user
        self.app = app
        self.unauth_status = unauth_status
        self._password = password
        self._expected = base64.b64encode(f"{user}:{password}".encode())

    def credentials_url(self, path: str) -> str:
        return userinfo_url(self.scheme, self.host, self.port, self.user, self._password, path)

    def _authorized(self, request: Request) -> bool:
        values = request.headers.get("authorization", [])
        if len(values) != 1:
            return False
        scheme, _, token = values[0].strip().partition(" ")
        return scheme.lower() == "basic" and hmac.compare_digest(
            token.strip().encode("latin-1"), self._expected
        )

    def respond(self, request: Request) -> Response:
        if not self._authorized(request):
            if self.unauth_status == 404:
                return Response(404, [("Content-Type", "text/plain")], b"not found\n")
            return Response(
                401,
                [("WWW-Authenticate", f'Basic realm="{REALM}"'), ("Content-Type", "text/plain")],
                b"unauthorized\n",
            )
        return self.app(request)


class PathRedirector(RecordingServer):
    """Redirects every request below ``prefix`` to the same path and query on ``target``, with userinfo."""

    def __init__(
        self, prefix: str, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None, status: int = 302
    ) -> None:
        super().__init__(host, tls)
        self.prefix = prefix
        self.status = status
        self.target: AuthOrigin | None = None

    def respond(self, request: Request) -> Response:
        if self.target is None or not request.path.startswith(self.prefix):
            return Response(404, [("Content-Type", "text/plain")], b"not found\n")
        return Response(self.status, [("Location", self.target.credentials_url(request.target))], b"")


__all__ = ["AuthOrigin", "PathRedirector", "Recorded", "RecordingServer", "Request", "Response"]
