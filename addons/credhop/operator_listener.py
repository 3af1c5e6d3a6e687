"""The operator listener (`credhop_metrics=HOST:PORT`): `/metrics` for Prometheus and the live chains
page (chains_page.py), in a thread of its own, never on the proxy port. An optional token file guards
every path: `Authorization: Bearer TOKEN` (Prometheus' `authorization.credentials_file`, curl), or Basic
with the token as password, which is what a browser can send. No mitmproxy here.
"""

from __future__ import annotations

import base64
import hmac
import logging
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

log = logging.getLogger("credhop")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
MIN_TOKEN = 16  # characters: a shorter token is guessable over a network


class TokenError(ValueError):
    pass


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:9464` for IPv6); raises ValueError with a message for people."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"credhop_metrics must be HOST:PORT, e.g. 127.0.0.1:9464, not {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def read_token(path: str) -> bytes:
    """The token of a token file (one line; surrounding whitespace ignored). Raises TokenError."""
    try:
        token = Path(path).expanduser().read_bytes().strip()
    except OSError as e:
        raise TokenError(f"cannot read {path}: {e.strerror or e}") from None
    if len(token) < MIN_TOKEN or b"\n" in token:
        raise TokenError(f"{path} must hold one token of at least {MIN_TOKEN} characters "
                         "(openssl rand -hex 32 > FILE)")
    return token


def _presented(header: str) -> bytes | None:
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip().encode()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).partition(b":")[2]
        except ValueError:
            return None
    return None


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's event stream must not hold up shutdown
    allow_reuse_address = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes and page views are not news
        pass


class OperatorListener:
    """Routes by path prefix to WSGI apps; answers 401 without a valid token when one is set."""

    def __init__(self, host: str, port: int, token: bytes | None = None) -> None:
        self.token = token
        self.routes: list[tuple[str, WSGIApp]] = []
        self.closing = threading.Event()  # long-lived responses (the event stream) end when it is set
        self._server = make_server(host, port, self._app, server_class=_Server, handler_class=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, name="credhop-operator", daemon=True)

    def mount(self, prefix: str, app: WSGIApp) -> None:
        """`prefix` "/metrics" serves /metrics only; "/" serves whatever no other prefix takes."""
        self.routes.append((prefix, app))
        self.routes.sort(key=lambda route: -len(route[0]))

    def start(self) -> None:
        self._thread.start()

    @property
    def host(self) -> str:
        return self._server.server_address[0]

    @property
    def port(self) -> int:
        return self._server.server_port

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.token is not None and not self._allowed(environ.get("HTTP_AUTHORIZATION", "")):
            start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                                ("WWW-Authenticate", 'Basic realm="credhop", charset="UTF-8"'),
                                                ("Cache-Control", "no-store")])
            return [b"credhop: this listener needs its token (Authorization: Bearer TOKEN)\n"]
        path = environ.get("PATH_INFO") or "/"
        for prefix, app in self.routes:
            if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
                return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found\n"]

    def _allowed(self, header: str) -> bool:
        presented = _presented(header)
        return presented is not None and self.token is not None and hmac.compare_digest(presented, self.token)

    def close(self) -> None:
        self.closing.set()
        if self._thread.is_alive():  # shutdown() waits for serve_forever, which never ran otherwise
            self._server.shutdown()
        self._server.server_close()
