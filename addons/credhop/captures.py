"""Captures of HTTP traffic (mitmproxy flow files, HAR files) as a neutral list of exchanges.

`sniff` tells a hop log, a HAR and a flow file apart by content, not by name. HAR (Chrome/Chromium and
Firefox DevTools, mitmproxy's `hardump`, Playwright's `record_har_path`) is plain JSON; flow files
need mitmproxy, which is imported only here, only for them, so a hop log or a HAR is read where
mitmproxy is not installed. Exchanges hold raw secrets (headers, userinfo): they never leave the
process except as hop records, which the replay redacts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, BinaryIO

import ada_url

from .urls import DEFAULT_PORTS, Origin, request_url

INSTALL_HINT = "pip install mitmproxy (or read a HAR or hop log instead)"
_TNETSTRING = re.compile(rb"^\s*\d{1,12}:")  # how every mitmproxy flow file starts


class CaptureError(Exception):
    """A capture that cannot be read; the message is one line and names no secret."""


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request and what came back, from any capture."""

    client: str  # the client's address, or a label when the capture does not know it (HAR)
    method: str
    url: str  # absolute, without userinfo: scheme://host[:port]/path?query
    origin: Origin  # where the request really went
    status: int | None  # None: no response (see error)
    request_headers: tuple[tuple[str, str], ...] = field(repr=False)
    response_headers: tuple[tuple[str, str], ...] = field(repr=False)
    start: float  # Unix time the request started
    end: float  # Unix time the response (or the error) arrived
    flow: str  # unique id of this exchange across every capture read
    error: str | None = None
    order: int = 0  # position in its capture: ties in time keep the capture's order
    link: str | None = None  # who follows redirects together (HAR: client and page); default: client

    def locations(self) -> tuple[str, ...]:
        return tuple(v for k, v in self.response_headers if k.lower() == "location")


def sniff(data: bytes) -> tuple[str, Any]:
    """('flows', None), ('har', the parsed document) or ('hoplog', None) for a file's bytes."""
    if _TNETSTRING.match(data[:64]):
        return "flows", None
    if data.lstrip(b" \t\r\n\xef\xbb\xbf").startswith(b"{"):
        try:
            doc = json.loads(data.decode("utf-8-sig", errors="replace"))
        except ValueError:  # JSON Lines (a hop log) is no single document
            doc = None
        except RecursionError:  # json.loads recurses per bracket: a hostile file nests thousands
            raise CaptureError("JSON nested too deeply to read") from None
        except MemoryError:
            raise CaptureError("too large to parse in the memory available (lower --max-input-mb)") from None
        if is_har(doc):
            return "har", doc
    return "hoplog", None


# -- HAR ----------------------------------------------------------------------------------------------


def is_har(doc: Any) -> bool:
    return (isinstance(doc, dict) and isinstance(doc.get("log"), dict)
            and isinstance(doc["log"].get("entries"), list))


def read_har(doc: dict[str, Any], label: str, file_no: int) -> list[Exchange]:
    """Exchanges of a HAR document. `label` names the client (HAR does not record its address)."""
    creator = doc["log"].get("creator")
    name = creator.get("name") if isinstance(creator, dict) else None
    client = f"{label} ({name})" if isinstance(name, str) and name else label
    out = []
    for n, entry in enumerate(doc["log"]["entries"]):
        exchange = _har_exchange(entry, client, f"har{file_no}-{n}", n)
        if exchange is not None:
            out.append(exchange)
    return out


def _har_exchange(entry: Any, client: str, flow: str, order: int) -> Exchange | None:
    if not isinstance(entry, dict):
        return None
    request, response = entry.get("request"), entry.get("response")
    if not isinstance(request, dict) or not isinstance(request.get("url"), str):
        return None
    response = response if isinstance(response, dict) else {}
    method = request.get("method") if isinstance(request.get("method"), str) else "GET"
    if method == "CONNECT":
        return None
    parts = _url_parts(request["url"])
    if parts is None:
        return None
    url, origin = parts
    start = _har_time(entry.get("startedDateTime"))
    if start is None:
        return None
    end = start + _until_response(entry.get("timings"))
    status = response.get("status")
    status = status if type(status) is int and 100 <= status <= 999 else None
    headers = _har_headers(response.get("headers"))
    redirect_url = response.get("redirectURL")
    if status in (301, 302, 303, 307, 308) and isinstance(redirect_url, str) and redirect_url \
            and not any(k.lower() == "location" for k, _ in headers):
        headers += (("Location", redirect_url),)  # a writer that keeps the target only there
    error = None
    if status is None:
        for key in ("_error", "_failureText", "_errorText"):
            if isinstance(response.get(key), str) and response[key]:
                error = response[key]
                break
        else:
            error = "no response"
    page = entry.get("pageref") if isinstance(entry.get("pageref"), str) else None
    return Exchange(client, method.upper(), url, origin, status, _har_headers(request.get("headers")), headers,
                    start, end, flow, error, order, link=f"{client}#{page}" if page else None)


def _until_response(timings: Any) -> float:
    """Seconds from `startedDateTime` to the response, at most: send and wait only. Writers disagree on
    whether connect and TLS come before it (mitmproxy sets up the server connection before the request),
    and an estimate past the real answer would put a 401 after the client's retry of it."""
    if not isinstance(timings, dict):
        return 0.0
    return sum(v for k in ("send", "wait") if type(v := timings.get(k)) in (int, float) and v > 0) / 1000


def _har_headers(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        return ()
    return tuple((h["name"], h["value"]) for h in value
                 if isinstance(h, dict) and isinstance(h.get("name"), str) and isinstance(h.get("value"), str)
                 and not h["name"].startswith(":"))  # HTTP/2 pseudo-headers


def _har_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Python 3.10 reads only 0, 3 or 6 fractional digits
    text = re.sub(r"\.(\d+)", lambda m: "." + (m[1] + "000000")[:6], text, count=1)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _url_parts(raw: str) -> tuple[str, Origin] | None:
    """The request URL without userinfo or fragment (Chromium's HAR keeps the userinfo), and its origin."""
    try:
        url = ada_url.URL(raw)
    except ValueError:
        return None
    scheme = url.protocol.rstrip(":")
    if scheme not in DEFAULT_PORTS:
        return None
    host = url.hostname.strip("[]").lower()
    port = int(url.port) if url.port else DEFAULT_PORTS[scheme]
    return request_url(scheme, host, port, (url.pathname or "/") + url.search), Origin(scheme, host, port)


# -- mitmproxy flow files --------------------------------------------------------------------------------


def read_flows(stream: BinaryIO, file_no: int) -> list[Exchange]:
    """Exchanges of a `mitmdump -w` file. Needs mitmproxy; raises CaptureError without it."""
    try:
        from mitmproxy import exceptions, http
        from mitmproxy import io as mitmio
    except ImportError:
        raise CaptureError(f"reading mitmproxy flow files needs mitmproxy: {INSTALL_HINT}") from None
    out: list[Exchange] = []
    try:
        for n, flow in enumerate(mitmio.FlowReader(stream).stream()):
            if isinstance(flow, http.HTTPFlow):
                exchange = _flow_exchange(flow, n)
                if exchange is not None:
                    out.append(exchange)
    except exceptions.FlowReadException as e:
        if not out:
            raise CaptureError(f"not a readable mitmproxy flow file ({str(e)[:120]})") from None
        # a file cut short (mitmdump killed): keep the flows before the damage
    except _FLOW_DAMAGE as e:
        # mitmproxy's reader lets these out of a hostile file: tnetstring recurses per nested list, and
        # migrating a flow that lacks a field raises KeyError: never a traceback. As above, the flows
        # before the damage are kept
        if not out:
            raise CaptureError(f"not a readable mitmproxy flow file ({_damage(e)})") from None
    return out


# what mitmproxy's FlowReader raises on a damaged file besides FlowReadException (mitmproxy 10 to 12)
_FLOW_DAMAGE = (RecursionError, MemoryError, KeyError, AttributeError, TypeError, ValueError, IndexError,
                UnicodeError, OverflowError)


def _damage(e: BaseException) -> str:
    if isinstance(e, RecursionError):
        return "nested too deeply to read"
    if isinstance(e, MemoryError):
        return "too large to read in the memory available"
    return f"{type(e).__name__}: {str(e)[:80]}"  # KeyError: 'client_conn'


def _flow_exchange(flow: Any, order: int) -> Exchange | None:
    request, response = flow.request, flow.response
    if request.method == "CONNECT":
        return None
    peer = flow.client_conn.peername
    client = str(peer[0]) if peer else "unknown"
    host = request.host.lower()
    url = request_url(request.scheme, host, request.port, request.path)
    start = request.timestamp_start or 0.0
    if response is not None:
        end = response.timestamp_start or response.timestamp_end or start
        status, headers = response.status_code, tuple(response.headers.items(multi=True))
        error = None
    else:
        end = flow.error.timestamp if flow.error and flow.error.timestamp else start
        status, headers = None, ()
        error = flow.error.msg if flow.error else "no response"
    return Exchange(client, request.method.upper(), url, Origin(request.scheme, host, request.port), status,
                    tuple(request.headers.items(multi=True)), headers, start, end, f"flow-{flow.id}", error,
                    order)
