"""Location parsing the way real clients do it: WHATWG URL rules (ada), not urllib.

A redirect target is resolved against the request URL, its userinfo is
percent-decoded into a `Credential`, and the Location is rewritten with only
the userinfo removed. Nothing here imports mitmproxy.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

import ada_url

from .credentials import Credential

DEFAULT_PORTS = {"http": 80, "https": 443}

# scheme://userinfo@ or //userinfo@ ; greedy up to the last "@" of the authority,
# as WHATWG parsers do. Backslash ends the authority for http(s) (WHATWG).
_AUTHORITY = re.compile(
    r"^(?P<head>[\x00-\x20]*(?:[A-Za-z][A-Za-z0-9+.\-]*:)?[\\/]{2})"
    r"(?P<authority>[^/\\?#]*)"
)
_USERINFO_IN_TEXT = re.compile(
    r"(?P<head>(?:[A-Za-z][A-Za-z0-9+.\-]*:)?//)(?P<userinfo>[^/\\?#\s\"'<>]*)@"
)


class LocationError(ValueError):
    """A Location no client would follow. The message never holds userinfo."""


@dataclass(frozen=True, slots=True)
class Origin:
    """The (scheme, host, port) triple a credential is bound to."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if DEFAULT_PORTS.get(self.scheme) == self.port:
            return f"{self.scheme}://{host}"
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        host = self.host.strip("[]")
        if host == "localhost" or host.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @property
    def is_plaintext(self) -> bool:
        return self.scheme != "https"


@dataclass(frozen=True, slots=True)
class Location:
    """A parsed redirect target."""

    raw: str  # the header as received; may hold a secret, never log it
    url: str  # absolute, without userinfo or fragment: what the client will request
    origin: Origin
    path: str  # pathname + search
    relative: bool  # the header had no scheme (path-, query- or scheme-relative)
    credential: Credential | None
    stripped: str  # raw with only the userinfo removed

    @property
    def redacted(self) -> str:
        return redact_url(self.raw)


def _origin(url: ada_url.URL) -> Origin:
    scheme = url.protocol.rstrip(":")
    host = url.hostname.strip("[]")
    port = int(url.port) if url.port else DEFAULT_PORTS.get(scheme, 0)
    return Origin(scheme, host, port)


def _decode(part: str) -> str:
    try:
        return urllib.parse.unquote_to_bytes(part).decode("utf-8")
    except UnicodeDecodeError:
        raise LocationError("userinfo is not valid UTF-8 after percent-decoding") from None


def parse_location(raw: str, base: str) -> Location:
    """Resolve `raw` (a Location header value) against `base` (the request URL)."""
    try:
        url = ada_url.URL(raw, base)
    except ValueError:
        raise LocationError(f"unparseable Location {redact_url(raw)!r}") from None
    scheme = url.protocol.rstrip(":")
    if scheme not in DEFAULT_PORTS:
        raise LocationError(f"Location scheme {scheme!r} is not http or https")
    credential = None
    if url.username or url.password:
        credential = Credential(_decode(url.username), _decode(url.password))
        url.username = ""
        url.password = ""
    url.hash = ""
    return Location(
        raw=raw,
        url=url.href,
        origin=_origin(url),
        path=url.pathname + url.search,
        relative=not re.match(r"^[\x00-\x20]*[A-Za-z][A-Za-z0-9+.\-]*:", raw),
        credential=credential,
        stripped=strip_userinfo(raw, base) if credential else raw,
    )


def strip_userinfo(raw: str, base: str) -> str:
    """Remove the userinfo from `raw` and nothing else.

    The cut is textual so the client sees its Location unchanged otherwise; if
    a WHATWG parser would read the cut text as a different URL, fall back to the
    parser's own serialization without credentials.
    """
    expected = ada_url.URL(raw, base)
    expected.username = ""
    expected.password = ""
    m = _AUTHORITY.match(raw)
    if m and "@" in m["authority"]:
        cut = m["authority"].rindex("@") + 1
        candidate = raw[: m.end("head")] + m["authority"][cut:] + raw[m.end("authority") :]
        try:
            if ada_url.URL(candidate, base).href == expected.href:
                return candidate
        except ValueError:
            pass
    return expected.href


def normalize_url(url: str) -> str:
    """The form used to recognise a follow-up request: WHATWG href, no userinfo or fragment."""
    try:
        parsed = ada_url.URL(url)
    except ValueError:
        return url
    parsed.username = ""
    parsed.password = ""
    parsed.hash = ""
    return parsed.href


def redact_url(text: str) -> str:
    """Replace every userinfo in `text` by `user:***` or `***` (user-only is usually the token)."""

    def _mask(m: re.Match[str]) -> str:
        user, sep, _password = m["userinfo"].partition(":")
        if sep and _password:
            return f"{m['head']}{user}:***@"
        return f"{m['head']}***@"

    return _USERINFO_IN_TEXT.sub(_mask, text)


def urllib_view(absolute: str) -> tuple[str, str, int, bool] | None:
    """How Python's urllib reads the same URL: (scheme, host, port, has_userinfo).

    Used to refuse injection when two mainstream parsers disagree on where a
    credential would go.
    """
    try:
        parts = urllib.parse.urlsplit(absolute)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    return scheme, host, port or DEFAULT_PORTS.get(scheme, 0), "@" in parts.netloc


def parsers_disagree(raw: str, location: Location) -> bool:
    """True when urllib would send this Location somewhere else than a WHATWG client."""
    if location.relative:
        return False  # urllib cannot resolve these the same way; ada's answer stands
    view = urllib_view(raw.strip("\x00\x20"))
    if view is None:
        return True
    scheme, host, port, _ = view
    theirs = Origin(scheme, host.strip("[]"), port)
    ours = location.origin
    if theirs.scheme != ours.scheme or theirs.port != ours.port:
        return True
    # ada returns IDNA/ASCII hosts; compare in that form
    try:
        theirs_host = ada_url.idna_to_ascii(theirs.host).decode("ascii") if theirs.host else ""
    except (ValueError, UnicodeError):
        return True
    return theirs_host.rstrip(".") != ours.host.rstrip(".") or theirs_host == ""
