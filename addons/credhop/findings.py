"""The catalogue of findings: every kind a diagnosis can report, with its stable code (CH101...), stable
name, fixed severity and title, and the `Finding` a check yields (one line of what happened, one of how to
fix it). Nothing here reads a log or judges a chain; `checks` uses it, `report` and `cli` show it.
"""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("error", "warning", "info")  # most severe first
MAX_HOPS = 10  # uv (reqwest) gives up after 10 redirects


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of finding: a stable code, a stable name, a fixed severity."""

    code: str
    name: str
    severity: str
    title: str


CATALOGUE: tuple[Kind, ...] = (
    Kind("CH101", "credential-lost-on-redirect", "error",
         "a follow-up got 401/403/404 without a credential although one was in play"),
    Kind("CH102", "credential-rejected", "error",
         "a follow-up got 401/403/404 although it carried a credential"),
    Kind("CH103", "denied-after-redirect", "warning",
         "a follow-up got 401/403/404 and no credential was involved anywhere in the chain"),
    Kind("CH104", "error-status", "error", "a follow-up ended with another HTTP error status"),
    Kind("CH110", "credential-in-location", "info",
         "a Location carried userinfo, and what credhop did with it"),
    Kind("CH201", "credential-leaked-to-other-origin", "error",
         "the client re-sent a secret to another host or scheme after a redirect"),
    Kind("CH202", "credential-leaked-to-other-port", "error",
         "the client re-sent a secret to another port after a redirect"),
    Kind("CH203", "credential-leaked-over-plaintext", "error",
         "the client re-sent a secret over plaintext http after a redirect"),
    Kind("CH204", "leak-stripped", "warning",
         "the client tried to re-send a secret to another origin; credhop removed it"),
    Kind("CH205", "authorization-sent-to-signed-url", "error",
         "the client sent Authorization to a presigned URL, which carries its own signature"),
    Kind("CH301", "scheme-downgrade", "warning", "a redirect from https to plaintext http"),
    Kind("CH302", "redirect-loop", "error", "the chain requests the same URL twice"),
    Kind("CH303", "too-many-hops", "warning", f"more than {MAX_HOPS} redirects in one chain"),
    Kind("CH304", "location-missing", "error", "a redirect without exactly one Location header"),
    Kind("CH305", "location-unparseable", "error", "a Location no client can follow"),
    Kind("CH306", "relative-location", "info", "a relative Location, resolved against the request URL"),
    Kind("CH307", "method-changed", "warning", "a POST (or other method) became GET after a 301/302/303"),
    Kind("CH308", "malformed-path", "warning", "an empty path segment ('//') in the resolved Location"),
    Kind("CH401", "client-header-kept", "warning", "injection skipped: the client sent its own header"),
    Kind("CH402", "credential-expired", "warning", "injection skipped: the credential's TTL had run out"),
    Kind("CH403", "plaintext-refused", "warning", "injection refused: plaintext http destination"),
    Kind("CH404", "parsers-disagree", "warning",
         "injection refused: URL parsers disagree on the destination"),
    Kind("CH405", "no-rule-matched", "warning",
         "a Location credential matched no rule and was left in place"),
    Kind("CH406", "credential-unusable", "warning",
         "injection refused: the credential cannot go into a header"),
    Kind("CH407", "redirect-blocked", "warning", "a rule blocked the redirect; the client got 403"),
    Kind("CH408", "credential-swap-refused", "warning",
         "injection refused: another redirector already handed out a live credential for that origin"),
    Kind("CH501", "follow-up-failed", "error", "a follow-up failed without a response (connection, TLS)"),
    Kind("CH502", "follow-up-not-seen", "warning",
         "the client never made the follow-up request through the proxy"),
    Kind("CH503", "userinfo-in-request-line", "error",
         "observe mode: the client sent a Location's userinfo in its http:// request line; mitmproxy refused "
         "it (400)"),
)
KINDS: dict[str, Kind] = {k.code: k for k in CATALOGUE}
KINDS_BY_NAME: dict[str, Kind] = {k.name: k for k in CATALOGUE}


def kind_of(code_or_name: str) -> Kind | None:
    key = code_or_name.strip()
    return KINDS.get(key.upper()) or KINDS_BY_NAME.get(key.lower())


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: Kind
    message: str  # one line: what happened
    hint: str  # one line: how to fix it
    hop: int | None = None

    @property
    def code(self) -> str:
        return self.kind.code

    @property
    def name(self) -> str:
        return self.kind.name

    @property
    def severity(self) -> str:
        return self.kind.severity


def _f(code: str, message: str, hint: str, hop: int | None) -> Finding:
    return Finding(KINDS[code], message, hint, hop)
