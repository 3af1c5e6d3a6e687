"""What credhop reads from a mitmproxy flow, and the changes it makes to one.

The decisions come from `decide.py`; this module only knows how a decision
looks on a flow: who the client is, where a request really goes, the header
added, the Location stripped, the 3xx body scrubbed or replaced by a block page.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from mitmproxy import http
from mitmproxy.proxy import mode_specs

from .bodies import Decoded, Replacer, Scrubber, decoder, readable, userinfo_replacements
from .decide import RedirectDecision
from .records import Action
from .scrub import Redactor, printable
from .store import Grant
from .urls import Origin, redact_url, request_url

MARKER = ":key:"
DESTINATION = "credhop_destination"  # flow.metadata key: the name transparent mode verified
BodyRewriter = Scrubber | Replacer


def address_of(flow: http.HTTPFlow) -> str:
    peer = flow.client_conn.peername
    return str(peer[0]) if peer else "unknown"


def client_of(flow: http.HTTPFlow, client_id: str = "address") -> str:
    """Who a grant is bound to: the client's address, or with credhop_client_id=proxyauth the user
    mitmproxy's proxyauth authenticated for the connection (flow.metadata["proxyauth"] is
    (user, password) on mitmproxy 10.4 to 12; only the user is read). A request without one gets
    an identity of its own connection, which no other connection shares."""
    if client_id == "address":
        return address_of(flow)
    if client_id == "proxyauth":
        auth = flow.metadata.get("proxyauth")
        user = auth[0] if isinstance(auth, (tuple, list)) and auth and isinstance(auth[0], str) else None
        return f"user:{user}" if user else f"connection:{flow.client_conn.id}"
    # never a fallback to the address: a misspelled choice would let users behind one address share grants
    raise ValueError(f"unknown credhop_client_id {client_id!r}")


def origin_of(flow: http.HTTPFlow) -> Origin:
    """Where mitmproxy really sends the request: never the Host header. Its host is the name
    `CredHop.destination` verified for a transparent flow, else mitmproxy's `request.host`."""
    request = flow.request
    return Origin(request.scheme, _verified_host(flow) or request.host.lower(), request.port)


def url_of(flow: http.HTTPFlow) -> str:
    """The request's URL as URL parsers read it (mitmproxy's `Request.url` leaves IPv6 hosts bare),
    with the host of `origin_of`."""
    request = flow.request
    return request_url(request.scheme, _verified_host(flow) or request.host, request.port, request.path)


def remember_destination(flow: http.HTTPFlow, host: str, how: str) -> None:
    """Keep the name transparent mode verified for this request, for `origin_of` and `url_of`."""
    request = flow.request
    flow.metadata[DESTINATION] = {"for": [request.scheme, request.host, request.port], "host": host, "how": how}


def _verified_host(flow: http.HTTPFlow) -> str | None:
    """The host verified for this request as it is now, if transparent mode verified one."""
    request, found = flow.request, flow.metadata.get(DESTINATION)
    if isinstance(found, dict) and found.get("for") == [request.scheme, request.host, request.port]:
        return str(found["host"])
    return None


def mode_of(flow: http.HTTPFlow) -> Any:
    return getattr(flow.client_conn, "proxy_mode", None)


def is_transparent(flow: http.HTTPFlow) -> bool:
    return isinstance(mode_of(flow), mode_specs.TransparentMode)


def is_upstream(flow: http.HTTPFlow) -> bool:
    return isinstance(mode_of(flow), mode_specs.UpstreamMode)


def mark(flow: http.HTTPFlow, comment: str) -> None:
    """The :key: marker and a comment in mitmweb and the console."""
    comment = _one_line(comment)  # user names and hosts come from the network
    flow.marked = MARKER
    flow.comment = f"{flow.comment}\n{comment}" if flow.comment else comment


@lru_cache(maxsize=512)  # a download repeats its grant's comment on every request
def _one_line(comment: str) -> str:
    return printable(comment, one_line=True)


def header_names(request: http.Request) -> frozenset[str]:
    """The request's header names, lower case as mitmproxy matches them (ASCII letters only: a
    non-ASCII name never equals a header credhop adds, for mitmproxy or the server)."""
    return frozenset([name.lower().decode("latin-1") for name, _ in request.headers.fields])


def has_header(request: http.Request, name: str) -> bool:
    """`name.lower() in header_names(request)`, without building the set."""
    wanted = name.lower().encode("latin-1")
    return any(field.lower() == wanted for field, _ in request.headers.fields)


def add_header(request: http.Request, grant: Grant, absent: bool = False) -> None:
    """Set the grant's header. `absent`: the caller knows the request has none, so the field is
    appended as `Headers.__setitem__` would after finding nothing to replace."""
    # HTTP/2 and 3 want lower-case names (mitmproxy would lower-case and warn on every request)
    name = grant.header if request.http_version.startswith("HTTP/1") else grant.header.lower()
    if absent:
        field = (name.encode("utf-8", "surrogateescape"), grant.value.encode("utf-8", "surrogateescape"))
        request.headers.fields = (*request.headers.fields, field)
    else:
        request.headers[name] = grant.value


def apply_redirect(flow: http.HTTPFlow, decision: RedirectDecision, streamed: bool,
                   redactor: Redactor) -> BodyRewriter | None:
    """Strip the Location (inject, strip) or answer with a block page; return what rewrites the body.
    `streamed`: the body is still to come (responseheaders), else mitmproxy has it (response)."""
    response, location = flow.response, decision.location
    assert response is not None
    body: BodyRewriter | None = None
    if decision.rewrites_location and location:
        response.headers["location"] = location.stripped
        userinfo = _userinfo_text(location.raw)
        if userinfo:
            body = Scrubber(userinfo_replacements(userinfo))
            if streamed:
                _stream_through(flow, body)
    elif decision.action is Action.BLOCK and location and decision.rule:
        assert location.credential is not None
        message = redactor(printable(one_line=True, text=(
            f"credhop: rule {decision.rule.name!r} blocked a {response.status_code} redirect from "
            f"{redact_url(url_of(flow))} to {location.redacted} "
            f"(credential user={location.credential.display_user or '(token)'} {decision.fingerprint})."))
        ).encode() + b"\n"
        response.status_code, response.reason = 403, "Forbidden"
        response.headers = http.Headers(content_type="text/plain; charset=utf-8", content_length=str(len(message)))
        body = Replacer(message)
        if streamed:
            response.stream = body
    if body is not None and not streamed:
        finish_body(response, body)
    return body


def finish_body(response: http.Response, body: BodyRewriter) -> int:
    """Rewrite a body mitmproxy buffered instead of streaming it through `body`; the number of
    userinfo copies removed (so far, streamed ones included)."""
    if isinstance(body, Replacer) and not body.done:
        response.content = body.body
        body.done = True
    elif isinstance(body, Scrubber) and response.raw_content:
        try:
            if not readable(response.headers.get("content-encoding", "")):
                raise ValueError("unknown content-encoding")  # mitmproxy would pass it as is
            response.content = body.scrub(response.get_content(strict=True) or b"")
        except ValueError:  # an encoding credhop cannot read: drop the body rather than pass it
            response.headers.pop("content-encoding", None)
            response.raw_content = b""
            if "content-length" in response.headers:
                response.headers["content-length"] = "0"
    return getattr(body, "removed", 0)


def _stream_through(flow: http.HTTPFlow, rewriter: Scrubber) -> None:
    """Route the 3xx body through `rewriter`, streamed or not; its length may change,
    so the framing towards the client changes with it."""
    response = flow.response
    assert response is not None
    if response.headers.get("content-length") == "0":
        return
    if not response.stream and response.headers.get("content-length", "").isdigit():
        # mitmproxy buffers a body of known length it did not choose to stream (it decides before
        # this hook, and for good): scrub it whole in `response`, which keeps its framing and costs
        # less than streaming it through. A body of unknown length is streamed through the scrubber
        # from the start, because mitmproxy may switch it to streaming halfway (stream_large_bodies).
        return
    client_version = flow.request.http_version
    if client_version == "HTTP/1.0":  # no chunked framing: buffer, and scrub in `response`
        response.stream = False
        return
    response.headers.pop("content-length", None)
    if client_version == "HTTP/1.1":
        response.headers["transfer-encoding"] = "chunked"
    encoding = response.headers.pop("content-encoding", "").strip().lower()
    if readable(encoding) and decoder(encoding) is None:  # identity
        response.stream = rewriter
        return
    # compressed: the scrubber must see plain bytes; what credhop cannot decode is not passed on
    decompress = decoder(encoding)
    response.stream = Decoded(decompress, rewriter) if decompress else Replacer(b"")


def _userinfo_text(raw: str) -> str | None:
    """The `user:password@` text of a Location, as it may also appear in the 3xx body."""
    head, sep, rest = raw.partition("//")
    authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return authority[: authority.rindex("@") + 1] if sep and "@" in authority else None


def carries_secret(request: http.Request, names: frozenset[str]) -> bool:
    """Whether any header of `request` is one of the secret-bearing `names` (lower case)."""
    for name, _ in request.headers.fields:
        if name.lower().decode("latin-1") in names:
            return True
    return False
