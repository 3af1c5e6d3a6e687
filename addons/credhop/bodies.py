"""Rewriting 3xx bodies as they stream: mitmproxy's callable `response.stream`.

A redirect body often repeats its Location ("Redirecting to <a href=...>"),
userinfo included. Using the stream callable works whether mitmproxy buffers
the body or streams it (`stream_large_bodies` can switch mid-body).
"""

from __future__ import annotations

import html
import zlib
from typing import Any, Callable


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


MAX_DECODED = 8 << 20  # a 3xx body larger than this once decoded is cut, not decoded further


class Decoded:
    """Decodes a compressed body as it streams and hands the plain bytes to `inner` (a `Scrubber`),
    so userinfo inside a gzip/deflate/br/zstd body is found; the client gets the body unencoded.
    Undecodable data ends the body there: better cut than passing a credential through."""

    def __init__(self, decompress: Callable[[bytes], bytes], inner: Scrubber) -> None:
        self.decompress, self.inner = decompress, inner
        self.size = 0
        self.failed = False

    def __call__(self, chunk: bytes) -> list[bytes]:
        if not chunk:
            return self.inner(b"")
        if self.failed:
            return []
        try:
            data = self.decompress(chunk)
        except Exception:  # zlib.error, brotli.error, zstd.ZstdError: all mean "not what it says"
            self.failed = True
            return []
        self.size += len(data)
        if self.size > MAX_DECODED:
            self.failed = True
            return []
        return self.inner(data) if data else []


def readable(encoding: str) -> bool:
    """Whether credhop can see the plain bytes of a body in this `Content-Encoding`."""
    return encoding.strip().lower() in ("", "identity") or decoder(encoding) is not None


def decoder(encoding: str) -> Callable[[bytes], bytes] | None:
    """A streaming decompressor for one `Content-Encoding`, or None when credhop cannot read it."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress
    if encoding == "deflate":  # zlib-wrapped, as RFC 9110 says; raw deflate as some servers send it
        return _Deflate().decompress
    if encoding == "br":
        import brotli

        return brotli.Decompressor().process
    if encoding == "zstd":
        return _zstd()
    return None


def _zstd() -> Callable[[bytes], bytes] | None:
    """Whichever zstd binding this mitmproxy brought: Python 3.14's, its backport, or zstandard."""
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        try:
            from backports import zstd  # type: ignore[import-not-found,no-redef]
        except ImportError:
            try:
                import zstandard
            except ImportError:
                return None
            return zstandard.ZstdDecompressor().decompressobj().decompress  # type: ignore[no-any-return]
    return zstd.ZstdDecompressor().decompress  # type: ignore[no-any-return]


class _Deflate:
    def __init__(self) -> None:
        self._d: Any = None

    def decompress(self, chunk: bytes) -> bytes:
        if self._d is None:
            self._d = zlib.decompressobj(zlib.MAX_WBITS if chunk[:1] == b"\x78" else -zlib.MAX_WBITS)
        return self._d.decompress(chunk)
