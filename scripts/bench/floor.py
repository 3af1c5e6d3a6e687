"""A reference for `make bench`, not a product: the least any mitmproxy addon must do for credhop's job.

It cuts the userinfo out of a 3xx's Location, holds it for that client and origin, and adds it as a
Basic Authorization header to the client's later requests to that origin; with `floor_log`, it also
writes one info line per credential redirect, as credhop's event log does. No rules, no expiry, no
leak or swap checks, no records: what it costs is what mitmproxy charges any
addon for this work, the floor under credhop's figures.

    mitmdump -s scripts/bench/floor.py [--set floor_log=true]
"""

from __future__ import annotations

import base64
import logging
from urllib.parse import unquote, urlsplit

from mitmproxy import ctx, http

log = logging.getLogger("floor")
REDIRECTS = frozenset((301, 302, 303, 307, 308))


class Floor:
    def __init__(self) -> None:
        self.held: dict[tuple[str, str, str, int], str] = {}

    def load(self, loader) -> None:
        loader.add_option("floor_log", bool, False, "One info line per credential redirect.")

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        request = flow.request
        value = self.held.get((flow.client_conn.peername[0], request.scheme, request.host, request.port))
        if value is not None:
            request.headers["authorization"] = value

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None or response.status_code not in REDIRECTS or not flow.live:
            return
        location = response.headers.get("location", "")
        if "@" not in location:
            return
        url = urlsplit(location)
        port = url.port or (443 if url.scheme == "https" else 80)
        pair = f"{unquote(url.username or '')}:{unquote(url.password or '')}".encode()  # as clients decode it
        self.held[(flow.client_conn.peername[0], url.scheme, url.hostname or "", port)] = \
            "Basic " + base64.b64encode(pair).decode()
        response.headers["location"] = url._replace(netloc=url.netloc.rpartition("@")[2]).geturl()
        if ctx.options.floor_log:
            log.info("floor: %s -> %s user=%s", flow.request.url, response.headers["location"], url.username)


addons = [Floor()]
