"""Rewriting 3xx bodies as they stream: mitmproxy's callable `response.stream`.

A redirect body often repeats its Location ("Redirecting to <a href=...>"),
userinfo included. Using the stream callable works whether mitmproxy buffers
the body or streams it (`stream_large_bodies` can switch mid-body).
"""

from __future__ import annotations

import html


class Scrubber:
    """Replaces each `old` by its `new` in a body passed chunk by chunk; holds back a tail
    so an `old` split across two chunks is still found."""

    def __init__(self, replacements: dict[bytes, bytes]) -> None:
        self.replacements = sorted(((o, n) for o, n in replacements.items() if o), key=lambda p: -len(p[0]))
        self.keep = max((len(o) for o, _ in self.replacements), default=1) - 1
        self.removed = 0
        self._buf = b""

    def scrub(self, data: bytes) -> bytes:
        for old, new in self.replacements:
            self.removed += data.count(old)
            data = data.replace(old, new)
        return data

    def __call__(self, chunk: bytes) -> list[bytes]:
        self._buf = self.scrub(self._buf + chunk)
        if not chunk:  # end of body
            out, self._buf = self._buf, b""
        elif len(self._buf) > self.keep:
            cut = len(self._buf) - self.keep
            out, self._buf = self._buf[:cut], self._buf[cut:]
        else:
            out = b""
        return [out] if out else []  # an empty chunk would end a chunked body early


class Replacer:
    """Discards the upstream body and sends `body` instead, once, at the end."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.done = False

    def __call__(self, chunk: bytes) -> list[bytes]:
        if chunk or self.done:
            return []
        self.done = True
        return [self.body]


def userinfo_replacements(userinfo: str) -> dict[bytes, bytes]:
    """`//user:pass@` -> `//`, in the slash forms WHATWG accepts. Anchored on the
    slashes so a short token does not eat unrelated text (`time@work`)."""
    spellings = {userinfo, html.escape(userinfo), html.escape(userinfo).replace("&#x27;", "&#39;")}
    return {
        prefix + text.encode("utf-8", "surrogateescape"): prefix
        for text in spellings  # as written, and HTML-escaped the ways Go, Werkzeug and Python do
        for prefix in (b"//", b"\\\\", b"/\\", b"\\/")
    }
