"""Scrubbing secrets out of text: URL userinfo, secret header values and bare auth-scheme tokens.

Everything credhop writes passes through here once more on the way out, so a
mistake upstream still cannot write a secret. The header names come from one
place: the `credhop_secret_headers` option, through `Redactor`.
"""

from __future__ import annotations

import logging
import re
from enum import Enum
from typing import Iterable

from .secret_index import SecretIndex
from .urls import redact_url

# Watched whatever the option says. Proxy-Authorization too: without proxyauth, mitmproxy forwards
# it to the origin server (urllib3 CVE-2024-37891 is that header following a cross-origin redirect).
ALWAYS_SECRET = ("authorization", "proxy-authorization", "cookie")
DEFAULT_SECRET_HEADERS = ("x-api-key", "private-token", "x-auth-token")
# terminal control sequences, lone surrogates (undecodable bytes), and the invisible format characters
# that reorder or hide text (bidi overrides such as U+202E, zero-width ones) a hostile server can plant
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff"
                          r"\u00ad\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
                          r"\U000e0000-\U000e007f]")
_LINE_BREAK = re.compile(r"[\n\t]")
# a scheme word followed by its credential, anywhere
_AUTH_VALUE = re.compile(r"(?i)\b(basic|bearer|digest|negotiate|ntlm)\s+[^\s'\",;)]{8,}")
_AUTH_WORDS = ("basic", "bearer", "digest", "negotiate", "ntlm")
# userinfo in a request line's authority form, which has no "//" (`CONNECT user:pw@host:443 HTTP/1.1`,
# as urllib.request sends it when it follows a Location with userinfo through a proxy)
_AUTHORITY_FORM = re.compile(r"(?<![\w/])([A-Z]{3,10} +)([^\s/@'\"]+)@(?=[^\s/@]+ +HTTP/)")
# spellings of secrets masked wherever they turn up, whatever the count (see secret_index); the proxy
# sizes it from credhop_max_credentials (`remembered_for`): a held credential's secret is never forgotten
REMEMBERED = 4096
FORMS_PER_CREDENTIAL = 10  # its secret_forms and injected_forms, about 9 in practice
FEW = 32  # up to this many spellings, one compiled pattern tells quicker whether text holds one
MEMO_SIZE = 2048  # scrubbed short strings (methods, clients, rules, origins, user names) kept for reuse
MEMO_LENGTH = 120  # longer text (most URLs) is rarely repeated


def remembered_for(max_credentials: int) -> int:
    """How many spellings to remember so that the secrets of every credential held stay masked, and
    as many again forgotten by the store but maybe still in a client's hands."""
    return max(REMEMBERED, 2 * FORMS_PER_CREDENTIAL * max_credentials)


def secret_header_names(extra: Iterable[str] = DEFAULT_SECRET_HEADERS) -> frozenset[str]:
    """The watched header names (lower case): the fixed ones plus `extra`. Raises ValueError on a bad name."""
    names = [h.strip().lower() for h in extra if h.strip()]
    bad = [h for h in names if not all(c.isalnum() or c in "-_" for c in h)]
    if bad:
        raise ValueError(f"invalid header name(s): {', '.join(bad)}")
    return frozenset(ALWAYS_SECRET) | frozenset(names)


class Redactor:
    """Scrubs text for one set of secret header names."""

    def __init__(self, header_names: Iterable[str] = secret_header_names(),
                 remembered: int = REMEMBERED) -> None:
        self._names = tuple({n.lower() for n in header_names})
        self._words = self._names + _AUTH_WORDS  # either pattern needs one of these
        names = "|".join(sorted((re.escape(n) for n in set(header_names)), key=len, reverse=True))
        # `Name: <anything>` as header lines or (name, value) reprs; not URL query parameters such
        # as `?set-cookie=1`, which are no header
        self._header = re.compile(
            rf"(?i)(?<![\w?&=/.-])({names})(['\"]?\s*[:,]\s*b?['\"]?)([^'\"\r\n]+)"
        )
        self._known = SecretIndex(remembered)  # spellings of secrets seen
        self._few_re: re.Pattern[str] | None = None  # while there are few: all of them; None when one was added
        self._memo: dict[str, str] = {}  # see `_short`; emptied when a new secret is remembered

    @property
    def remembered(self) -> int:
        return self._known.capacity

    def remember(self, forms: Iterable[str]) -> None:
        """Mask these spellings of a secret wherever they turn up, whatever surrounds them (a token
        copied into a query, a path or a fragment). Bounded: the least recently remembered are
        forgotten first, beyond `remembered`."""
        if self._known.add(forms):
            self._memo.clear()  # an answer made before may hold the new secret
            self._few_re = None

    def _may_hold_known(self, text: str) -> bool:
        """Whether `text` may hold a remembered secret. Few of them: one pattern of them all, compiled
        again when one is added (a few times in a process's life); then the index alone."""
        if len(self._known) > FEW:
            return True
        if self._few_re is None:
            self._few_re = re.compile("|".join(map(re.escape, self._known.forms())))
        return self._few_re.search(text) is not None

    def known(self) -> list[str]:
        return self._known.forms()

    def __call__(self, text: str) -> str:
        if len(self._known) and self._may_hold_known(text):
            text = self._known.mask(text)
        text = redact_url(text)
        if "@" in text and "HTTP/" in text:  # the pattern's lookahead needs both
            text = _AUTHORITY_FORM.sub(lambda m: f"{m[1]}***@", text)
        if text.isascii():
            # on ASCII text (?i) is lower(): without a header name or a scheme word in it, neither
            # pattern can match, and most text (URLs, codes, fingerprints) has neither. A plain loop:
            # any() over a generator costs more than the searches
            lower = text.lower()
            for word in self._words:
                if word in lower:
                    break
            else:
                return text
            if any(name in lower for name in self._names):
                text = self._header.sub(lambda m: f"{m[1]}{m[2]}***", text)
            if any(word in lower for word in _AUTH_WORDS):
                text = _AUTH_VALUE.sub(lambda m: f"{m[1]} ***", text)
            return text
        text = self._header.sub(lambda m: f"{m[1]}{m[2]}***", text)
        return _AUTH_VALUE.sub(lambda m: f"{m[1]} ***", text)

    def record(self, value: object) -> object:
        """A JSON-ready value with every string in it scrubbed."""
        kind = type(value)
        if kind is dict:  # a record: its values are mostly strings and numbers, handled here without a call
            memo = self._memo
            out: dict[object, object] = {}
            for key, item in value.items():  # type: ignore[attr-defined]
                kind = type(item)
                if kind is str:
                    clean = memo.get(item)
                    out[key] = clean if clean is not None else self.cached(item)
                elif kind in _PLAIN or isinstance(item, Enum):
                    out[key] = item
                else:
                    out[key] = self.record(item)
            return out
        if kind is str:
            return self.cached(value)  # type: ignore[arg-type]
        if kind in _PLAIN or isinstance(value, Enum):  # numbers, flags; codes credhop chose (records.Code)
            return value
        if isinstance(value, str):  # a subclass, not a code
            return self.cached(value)
        if isinstance(value, dict):
            return {k: self.record(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.record(v) for v in value]
        return value

    def cached(self, text: str) -> str:
        """`self(text)`, remembered for short text: record fields repeat (a client, a rule, an origin)."""
        if len(text) > MEMO_LENGTH:
            return self(text)
        clean = self._memo.get(text)
        if clean is None:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            clean = self._memo[text] = self(text)
        return clean


_PLAIN = frozenset((int, float, bool, type(None)))


scrub = Redactor()  # the default headers: for reports, which do not know the proxy's options


def printable(text: str, one_line: bool = False) -> str:
    """`text` safe for a terminal or a UTF-8 file: controls, line separators and lone surrogates
    escaped; with `one_line`, newlines and tabs too (a log line no value can split or forge)."""
    text = _UNPRINTABLE.sub(lambda m: ascii(m[0])[1:-1], text)
    return _LINE_BREAK.sub(lambda m: ascii(m[0])[1:-1], text) if one_line else text


SCRUBBED_BY = "credhop_scrubbed_by"  # LogRecord attribute: the Redactor that scrubbed its message


class SecretFilter(logging.Filter):
    """Scrubs every log record that passes a handler, mitmproxy's own lines included.

    A client can put userinfo into its request line (uv 0.5.25 does through an
    HTTP proxy), and mitmproxy logs such lines when it rejects them.
    """

    def __init__(self, redactor: Redactor = scrub) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        # the filter sits on every handler: a record this redactor already scrubbed (at an earlier
        # handler, or credhop's own event-log lines) is not scrubbed again
        if getattr(record, SCRUBBED_BY, None) is self.redactor:
            return True
        try:
            message = record.getMessage()
        except Exception:
            return True
        clean = self.redactor(message)
        if clean != message:
            record.msg, record.args = clean, None
        setattr(record, SCRUBBED_BY, self.redactor)
        return True
